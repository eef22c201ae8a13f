//! The report: a table on stdout, JSON in target/bench/results.json.
use std::time::Duration;

use serde_json::{json, Value};

use crate::bpf_cost::{BpfRun, ProgCost};
use crate::figures::{median, median_of, quartiles, thousands};
use crate::load::Shape;
use crate::machine::Machine;
use crate::measure::{Comparison, Pair, Startup};
use crate::options::{Options, BUSY_SHARE, CONTROL, PAIR_ATTEMPTS, SMALL_RING};
use crate::series::{ManySeries, OneScrape, OPENED as OPENED_FAMILY};
use crate::soak::Soak;
use crate::watch::{Run, Sub, Traced, Watcher};

/// Targets for this 2-core machine: issue 5's start-up and memory, issue 14's rates, CPU and BPF time.
const ACCEPT_RATIO_TARGET: f64 = 0.98;
const TRACER_RATIO_TARGET: f64 = 0.95;
const READY_TARGET_MS: f64 = 50.0;
const RSS_TARGET_KB: u64 = 16 * 1024;
const CPU_TARGET_US: f64 = 0.3;
/// BPF time per connection over an untraced connection's time.
const ACCEPT_BPF_SHARE_TARGET: f64 = 0.015;
const TRACER_BPF_SHARE_TARGET: f64 = 0.05;

pub(crate) struct Report<'a> {
    pub(crate) machine: Machine,
    pub(crate) options: &'a Options,
    pub(crate) comparison: Comparison,
    pub(crate) startup: Startup,
    pub(crate) scaling: Vec<Pair>,
    /// BPF time per connection, per watcher label, one entry per run.
    pub(crate) bpf: Vec<(String, Vec<BpfRun>)>,
    /// One scrape of many series (--scrape-series), unless skipped.
    pub(crate) many_series: Option<ManySeries>,
}

/// A watcher's runs over all rounds, summed up.
struct Summary {
    rate: f64,
    ratio: f64,
    /// First and third quartiles of the pairs' ratios.
    ratio_iqr: (f64, f64),
    expected: Option<u64>,
    printed: u64,
    lost: u64,
    us_per_event: Option<f64>,
    us_per_event_all: Option<f64>,
    peak_rss_kb: u64,
    wakeups_per_event: Option<f64>,
    all_exited_ok: bool,
    failed_connects: u64,
}

fn summarize(pairs: &[Pair]) -> Summary {
    let traced: Vec<&Traced> = pairs.iter().filter_map(|p| p.traced.traced.as_ref()).collect();
    Summary {
        rate: median(pairs.iter().map(|p| p.traced.load.rate()).collect()),
        ratio: median(pairs.iter().map(Pair::ratio).collect()),
        ratio_iqr: quartiles(pairs.iter().map(Pair::ratio).collect()),
        expected: traced.iter().map(|t| t.expected).sum(),
        printed: traced.iter().map(|t| t.printed).sum(),
        lost: traced.iter().map(|t| t.lost).sum(),
        us_per_event: median_of(traced.iter().map(|t| t.us_per_event(t.cpu_events))),
        us_per_event_all: median_of(traced.iter().map(|t| t.us_per_event(t.cpu))),
        peak_rss_kb: traced.iter().map(|t| t.peak_rss_kb).max().unwrap_or(0),
        wakeups_per_event: median_of(traced.iter().map(|t| t.wakeups_per_event())),
        all_exited_ok: traced.iter().all(|t| t.exited_ok),
        failed_connects: pairs.iter().map(|p| p.base.load.failed + p.traced.load.failed).sum(),
    }
}

impl Summary {
    fn is_tcpkit_complete(&self) -> bool {
        self.all_exited_ok && self.lost == 0 && self.expected == Some(self.printed)
    }
}

/// Whether every event was printed, in words: a run that lost events says so.
fn completeness(expected: Option<u64>, printed: u64, lost: u64, exited_ok: bool) -> String {
    let mut words = Vec::new();
    if lost > 0 {
        words.push(format!("LOST {lost}"));
    }
    match expected {
        Some(e) if printed < e => words.push(format!("MISSING {}", e - printed)),
        Some(e) if printed > e => words.push(format!("EXTRA {}", printed - e)),
        Some(_) if words.is_empty() => words.push("all printed".into()),
        Some(_) => {}
        None => words.push("not counted".into()),
    }
    if !exited_ok {
        words.push("BAD EXIT".into());
    }
    words.join(", ")
}

impl Report<'_> {
    pub(crate) fn table(&self) -> String {
        let mut t = String::new();
        t += "tcpkit overhead benchmark\n";
        t += &format!("{}\n", machine_line(&self.machine));
        t += &load_line(self.options);
        t += &self.comparison_table();
        t += &self.rounds_table();
        t += &self.startup_table();
        if !self.bpf.is_empty() {
            t += &self.bpf_table();
        }
        if let Some(many) = &self.many_series {
            t += &many_series_table(many);
        }
        if !self.scaling.is_empty() {
            t += &self.scaling_table();
        }
        t += &self.targets_table();
        t
    }

    fn comparison_table(&self) -> String {
        let width = self.comparison.rows.iter().map(|(label, _)| label.len()).max().unwrap_or(0).max(18);
        let row = |cells: [&str; 12]| {
            format!(
                "{:<width$} {:>8} {:>8} {:>11} {:>9} {:>9} {:>6}  {:<14} {:>6} {:>6} {:>6} {:>8}\n",
                cells[0],
                cells[1],
                cells[2],
                cells[3],
                cells[4],
                cells[5],
                cells[6],
                cells[7],
                cells[8],
                cells[9],
                cells[10],
                cells[11]
            )
        };
        let mut t = row([
            "",
            "conn/s",
            "traced/",
            "quartiles",
            "events",
            "printed",
            "lost",
            "complete",
            "CPU",
            "CPU",
            "wake-",
            "peak",
        ]);
        t += &row(["", "", "untraced", "of ratios", "expected", "", "", "", "µs/ev", "all", "ups/ev", "RSS"]);
        let untraced = median(self.all_runs().filter(|r| r.traced.is_none()).map(|r| r.load.rate()).collect());
        t += &row(["untraced", &thousands(untraced as u64), "", "", "", "", "", "", "", "", "", ""]);
        for (label, pairs) in &self.comparison.rows {
            let s = summarize(pairs);
            let iqr = format!("{:.3}-{:.3}", s.ratio_iqr.0, s.ratio_iqr.1);
            if label == CONTROL {
                t += &row([
                    label,
                    &thousands(s.rate as u64),
                    &format!("{:.3}", s.ratio),
                    &iqr,
                    "",
                    "",
                    "",
                    "",
                    "",
                    "",
                    "",
                    "",
                ]);
                continue;
            }
            let mut complete = completeness(s.expected, s.printed, s.lost, s.all_exited_ok);
            if s.failed_connects > 0 {
                complete += &format!(", {} connects failed", s.failed_connects);
            }
            let two_places = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.2}"));
            t += &row([
                label,
                &thousands(s.rate as u64),
                &format!("{:.3}", s.ratio),
                &iqr,
                &s.expected.map_or("-".into(), thousands),
                &thousands(s.printed),
                &s.lost.to_string(),
                &complete,
                &two_places(s.us_per_event),
                &two_places(s.us_per_event_all),
                &two_places(s.wakeups_per_event),
                &format!("{:.1} MB", s.peak_rss_kb as f64 / 1024.0),
            ]);
        }
        if let Some(skipped) = self.comparison.bpftrace_skipped {
            t += &format!("{:<18} {skipped}\n", "bpftrace");
        }
        if let Some(skipped) = self.comparison.libbpf_tools_skipped {
            t += &format!("{:<18} {skipped}\n", "libbpf-tools");
        }
        t += "conn/s and ratios: medians over rounds, each traced run against the untraced run next to it; the \
              control\nrow compares untraced runs in the same way, so its distance from 1 is the method's own error. \
              Events: sums\nover rounds. CPU µs/ev: the tracer's user+sys per printed event while tracing (ready to \
              stop); all: over its\nwhole life, start-up and exit included. Wake-ups/ev: times the tracer slept and \
              was woken, per printed\nevent. bpftrace and tcpstates print every TCP state change on the machine, tcplife \
              every end of a\nconnection of this process: their expected counts are not known. tcpkit metrics prints \
              nothing: its printed\nevents are the accepts it counted (tcpkit_connections_opened_total, \
              direction=\"in\"), read in one scrape after\nthe load, and its lost what that scrape says it could \
              not count; its CPU and wake-ups per event are per\nconnection, from ready to just before that scrape.\n\n";
        t
    }

    /// Every measured run, comparison and scaling.
    fn all_runs(&self) -> impl Iterator<Item = &Run> {
        let comparison = self.comparison.rows.iter().flat_map(|(_, pairs)| pairs.iter());
        comparison.chain(self.scaling.iter()).flat_map(|p| [&p.base, &p.traced])
    }

    fn rounds_table(&self) -> String {
        let mut t = String::from(
            "each round: conn/s untraced -> traced (ratio); the untraced run goes first in odd rounds, second in even ones\n",
        );
        for round in 0..self.options.rounds {
            let cells: Vec<String> = self
                .comparison
                .rows
                .iter()
                .filter_map(|(label, pairs)| Some((label.trim_start_matches("tcpkit "), pairs.get(round)?)))
                .map(|(label, p)| format!("{label}: {}{}", pair_cell(p), busy_note(p)))
                .collect();
            t += &format!("  {}  {}\n", round + 1, cells.join("   "));
        }
        let busy: Vec<f64> = self.all_runs().map(|r| r.background).collect();
        let note = match busy.iter().any(|&b| b > BUSY_SHARE) {
            true => format!(": pairs marked BUSY were still busy after {PAIR_ATTEMPTS} attempts"),
            false => String::new(),
        };
        t += &format!(
            "other processes used {:.1}% of the CPUs during a measured run (median), {:.1}% at most{note}\n\n",
            median(busy.clone()) * 100.0,
            busy.iter().copied().fold(0.0, f64::max) * 100.0,
        );
        t
    }

    /// Per watcher: the median run's BPF time per connection, its share of an untraced connection, and each
    /// program's runs and time per connection (medians over runs, program by program).
    fn bpf_table(&self) -> String {
        let runs = self.bpf.first().map_or(0, |(_, r)| r.len());
        let mut t = format!(
            "BPF time per connection (kernel.bpf_stats_enabled: run_time_ns and run_cnt of the tracer's programs over \
             one load, per\nconnection made; median of {runs} runs, each after an untraced run, whose time per \
             connection is the base):\n"
        );
        for (label, runs) in &self.bpf {
            let total = median(runs.iter().map(BpfRun::ns_per_conn).collect());
            let base = median(runs.iter().map(|r| r.untraced_ns_per_conn).collect());
            let share = median(runs.iter().map(BpfRun::share).collect());
            t += &format!("  {label:<34} {total:>6.0} ns of {base:>6.0} ns per connection: {:>5.1}%\n", share * 100.0);
            for program in median_programs(runs) {
                t += &format!(
                    "      {:<28} {:>5.2} runs {:>6.0} ns/run {:>6.0} ns/conn\n",
                    program.name,
                    program.runs_per_conn,
                    program.ns_per_run(),
                    program.ns_per_conn
                );
            }
        }
        t + "\n"
    }

    fn startup_table(&self) -> String {
        let mut t = format!(
            "start-up, exec -> ready (header printed, programs attached), {} runs each:\n",
            self.startup.accept.len()
        );
        for (label, times) in [("tcpkit accept", &self.startup.accept), ("tcpkit tracer", &self.startup.tracer)] {
            let ms: Vec<f64> = times.iter().map(|d| d.as_secs_f64() * 1e3).collect();
            t += &format!(
                "  {label:<14} median {:.1} ms (min {:.1}, max {:.1})\n",
                median(ms.clone()),
                ms.iter().copied().fold(f64::INFINITY, f64::min),
                ms.iter().copied().fold(0.0, f64::max)
            );
        }
        t + "\n"
    }

    fn scaling_table(&self) -> String {
        let mut t = String::from("scaling: tcpkit tracer, one run each, against the untraced run just before it\n");
        t += &format!(
            "  {:>1}  {:<7} {:>8} {:>8} {:>6} {:>9} {:>6} {:>6} {:>6}  {}\n",
            "K", "ring", "untraced", "traced", "ratio", "events/s", "lost", "CPU", "wake-", "complete"
        );
        t += &format!(
            "  {:>1}  {:<7} {:>8} {:>8} {:>6} {:>9} {:>6} {:>6} {:>6}\n",
            "", "", "", "", "", "", "", "µs/ev", "ups/ev"
        );
        for pair in &self.scaling {
            let Some(traced) = &pair.traced.traced else { continue };
            let ring = if pair.traced.label.contains(SMALL_RING) { SMALL_RING } else { "default" };
            let events_per_s = traced.expected.unwrap_or(traced.printed) as f64 / pair.traced.load.wall.as_secs_f64();
            let two_places = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.2}"));
            t += &format!(
                "  {:>1}  {:<7} {:>8} {:>8} {:>6.3} {:>9} {:>6} {:>6} {:>6}  {}{}\n",
                pair.traced.threads,
                ring,
                thousands(pair.base.load.rate() as u64),
                thousands(pair.traced.load.rate() as u64),
                pair.ratio(),
                thousands(events_per_s as u64),
                traced.lost,
                two_places(traced.us_per_event(traced.cpu_events)),
                two_places(traced.wakeups_per_event()),
                completeness(traced.expected, traced.printed, traced.lost, traced.exited_ok),
                busy_note(pair)
            );
        }
        t + "  (K: client threads; untraced, traced: conn/s; events/s: events the load made per second)\n\n"
    }

    fn targets_table(&self) -> String {
        let mut t = format!(
            "targets (issues 5 and 14, at {} client thread{}):\n",
            self.options.threads,
            if self.options.threads == 1 { "" } else { "s" }
        );
        t += &format!("  {:<50} {:<22} {}\n", "target", "measured", "met");
        for target in self.targets() {
            t += &format!("  {:<50} {:<22} {}\n", target.name, target.measured, if target.met { "yes" } else { "NO" });
        }
        t
    }

    fn tcpkit_rows(&self) -> Vec<(Sub, Summary)> {
        let rows = &self.comparison.rows;
        [
            Sub::Accept,
            Sub::AcceptStats,
            Sub::Tracer,
            Sub::TracerFailedLifespan,
            Sub::TracerContainer,
            Sub::TracerStats,
            Sub::TracerJson,
            Sub::Metrics,
        ]
        .into_iter()
        .filter_map(|sub| {
            let label = Watcher::Tcpkit { sub, ring: None }.label();
            rows.iter().find(|(l, _)| *l == label).map(|(_, pairs)| (sub, summarize(pairs)))
        })
        .collect()
    }

    fn targets(&self) -> Vec<Target> {
        let rows = self.tcpkit_rows();
        let mut targets = Vec::new();
        for (sub, s) in &rows {
            let goal =
                if matches!(sub, Sub::Accept | Sub::AcceptStats) { ACCEPT_RATIO_TARGET } else { TRACER_RATIO_TARGET };
            targets.push(Target {
                name: format!("{} traced/untraced >= {goal:.2}", sub.name()),
                measured: format!("{:.3}", s.ratio),
                met: s.ratio >= goal,
            });
        }
        let lost: u64 = rows.iter().map(|(_, s)| s.lost).sum();
        let complete = rows.iter().all(|(_, s)| s.is_tcpkit_complete());
        targets.push(Target {
            name: "no lost events, default ring (all tcpkit rows)".into(),
            measured: if complete { "0 lost, all printed".into() } else { format!("{lost} lost, see complete") },
            met: complete,
        });
        let ready = [median_ms(&self.startup.accept), median_ms(&self.startup.tracer)];
        targets.push(Target {
            name: format!("exec -> ready <= {READY_TARGET_MS:.0} ms (median; accept, tracer)"),
            measured: format!("{:.1} ms, {:.1} ms", ready[0], ready[1]),
            met: ready.iter().all(|&ms| ms <= READY_TARGET_MS),
        });
        let rss = rows.iter().map(|(_, s)| s.peak_rss_kb).max().unwrap_or(0);
        targets.push(Target {
            name: format!("peak RSS <= {} MB", RSS_TARGET_KB / 1024),
            measured: format!("{:.1} MB", rss as f64 / 1024.0),
            met: rss > 0 && rss <= RSS_TARGET_KB,
        });
        let cpu: Vec<f64> = rows.iter().filter_map(|(_, s)| s.us_per_event).collect();
        let worst = cpu.iter().copied().fold(0.0, f64::max);
        targets.push(Target {
            name: format!("tcpkit CPU <= {CPU_TARGET_US} µs per printed event (tracing)"),
            measured: cpu.iter().map(|v| format!("{v:.2} µs")).collect::<Vec<_>>().join(", "),
            met: !cpu.is_empty() && worst <= CPU_TARGET_US,
        });
        for (label, runs) in &self.bpf {
            let Some(sub) = label.strip_prefix("tcpkit ") else { continue };
            if sub.contains("baseline") {
                continue;
            }
            let goal = if sub == "accept" { ACCEPT_BPF_SHARE_TARGET } else { TRACER_BPF_SHARE_TARGET };
            let share = median(runs.iter().map(BpfRun::share).collect());
            targets.push(Target {
                name: format!("{sub}: BPF time <= {:.1}% of a connection", goal * 100.0),
                measured: format!("{:.1}%", share * 100.0),
                met: share <= goal,
            });
        }
        targets
    }

    pub(crate) fn json(&self) -> Value {
        let m = &self.machine;
        let o = self.options;
        json!({
            "machine": {
                "kernel": m.kernel, "cpus": m.cpus, "cpu_model": m.cpu_model, "date": m.date,
                "tcpkit_version": m.tcpkit_version, "backend": m.backend, "bpftrace_version": m.bpftrace_version,
            },
            "options": {
                "connections": o.connections, "threads": o.threads, "rounds": o.rounds, "startups": o.startups,
                "time_limit_s": o.time_limit, "small_ring": SMALL_RING, "pinned": !o.no_pin, "shape": format!("{:?}", o.shape).to_lowercase(),
            },
            "comparison": self.comparison.rows.iter().map(|(label, pairs)| {
                let s = summarize(pairs);
                json!({
                    "watcher": label,
                    "conn_per_s_median": s.rate,
                    "ratio_median": s.ratio,
                    "ratio_quartiles": [s.ratio_iqr.0, s.ratio_iqr.1],
                    "events_expected": s.expected,
                    "printed": s.printed,
                    "lost": s.lost,
                    "complete": completeness(s.expected, s.printed, s.lost, s.all_exited_ok),
                    "cpu_us_per_event_tracing_median": s.us_per_event,
                    "cpu_us_per_event_whole_life_median": s.us_per_event_all,
                    "peak_rss_kb": s.peak_rss_kb,
                    "wakeups_per_event_median": s.wakeups_per_event,
                    "pairs": pairs.iter().map(pair_json).collect::<Vec<_>>(),
                })
            }).collect::<Vec<_>>(),
            "bpftrace_skipped": self.comparison.bpftrace_skipped,
            "libbpf_tools_skipped": self.comparison.libbpf_tools_skipped,
            "startup_ms": {
                "accept": { "median": median_ms(&self.startup.accept), "runs": ms_list(&self.startup.accept) },
                "tracer": { "median": median_ms(&self.startup.tracer), "runs": ms_list(&self.startup.tracer) },
            },
            "scaling": self.scaling.iter().map(pair_json).collect::<Vec<_>>(),
            "bpf_per_connection": self.bpf.iter().map(|(label, runs)| json!({
                "watcher": label,
                "bpf_ns_per_conn_median": median(runs.iter().map(BpfRun::ns_per_conn).collect()),
                "untraced_ns_per_conn_median": median(runs.iter().map(|r| r.untraced_ns_per_conn).collect()),
                "share_median": median(runs.iter().map(BpfRun::share).collect()),
                "programs": median_programs(runs).iter().map(|p| json!({
                    "program": p.name, "runs_per_conn": p.runs_per_conn, "ns_per_run": p.ns_per_run(),
                    "ns_per_conn": p.ns_per_conn,
                })).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
            "scrape_many_series": self.many_series.as_ref().map(many_series_json),
            "targets": self.targets().iter().map(|t| json!({ "target": t.name, "measured": t.measured, "met": t.met })).collect::<Vec<_>>(),
        })
    }
}

/// The soak's samples and totals.
pub(crate) fn soak_table(machine: &Machine, soak: &Soak) -> String {
    let mut t = format!("tcpkit soak\n{}\n", machine_line(machine));
    t += "tcpkit tracer --failed -L -o json into a pipe read by the benchmark, the single-thread loop load back to back:\n";
    t += &format!("  {:>6} {:>9} {:>8} {:>10} {:>8}\n", "t (s)", "RSS (kB)", "owners", "events/s", "µs/ev");
    for s in &soak.samples {
        t += &format!(
            "  {:>6} {:>9} {:>8} {:>10} {:>8.2}\n",
            s.at.as_secs(),
            s.rss_kb,
            s.owners,
            thousands(s.events_per_s as u64),
            s.cpu_us_per_event
        );
    }
    t += &format!(
        "events: {} expected, {} printed, {} lost; tcpkit: {} ({})\n",
        thousands(soak.expected),
        thousands(soak.printed),
        soak.lost,
        soak.exit,
        completeness(Some(soak.expected), soak.printed, soak.lost, soak.exit == "exit 0")
    );
    let [c, a, x, f] = soak.by_type;
    t += &format!(
        "by type, printed of expected: connect {} of {}, accept {} of {}, close {} of {}, fail {} of {}\n",
        thousands(c.0),
        thousands(c.1),
        thousands(a.0),
        thousands(a.1),
        thousands(x.0),
        thousands(x.1),
        thousands(f.0),
        thousands(f.1)
    );
    t += &format!(
        "closes the network ended (named by their owner; here: reset while queued, reported by the accept): {}\n",
        thousands(soak.owner_closes)
    );
    let skipped: Vec<String> = soak.skipped_runs.iter().map(|(name, n)| format!("{name} {n}")).collect();
    t += &format!("runs the kernel skipped (recursion_misses), by program: {}\n", skipped.join(", "));
    for line in soak.unmatched.iter().take(20) {
        t += &format!("unmatched: {line}\n");
    }
    t
}

/// One scrape of many series: how many, how long, how much memory.
fn many_series_table(many: &ManySeries) -> String {
    let s = &many.scrapes;
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let took: Vec<f64> = s.iter().map(|s| ms(s.took)).collect();
    let cpu = median(s.iter().map(|s| ms(s.cpu)).collect());
    let mb = |kb: u64| kb as f64 / 1024.0;
    let [ready, before, after] = many.peak_rss_kb;
    let last = s.last();
    let of = |f: fn(&OneScrape) -> usize| thousands(last.map_or(0, f) as u64);
    let dropped: u64 = s.iter().map(|s| s.dropped).max().unwrap_or(0);
    let mut t = format!(
        "a scrape of many series: tcpkit metrics --max-series {}, one connection to each of {} loopback ports (about \
         {} series asked for)\n",
        many.max_series,
        thousands(many.ports as u64),
        thousands(many.asked as u64)
    );
    t += &format!(
        "  series: {} in the kernel's map; the scrape: {} {OPENED_FAMILY} series, {} sample lines, {} bytes; \
         {} events dropped\n",
        thousands(many.kernel_series as u64),
        of(|s| s.opened_series),
        of(|s| s.sample_lines),
        of(|s| s.bytes),
        dropped
    );
    t += &format!(
        "  GET /metrics, {} times: median {:.1} ms (min {:.1}, max {:.1}), connect to last byte; tcpkit's CPU {:.1} ms \
         a scrape (median)\n",
        s.len(),
        median(took.clone()),
        took.iter().copied().fold(f64::INFINITY, f64::min),
        took.iter().copied().fold(0.0, f64::max),
        cpu
    );
    t += &format!(
        "  tcpkit's peak RSS: {:.1} MB attached, {:.1} MB with the series made, {:.1} MB after the scrapes; {}\n",
        mb(ready),
        mb(before),
        mb(after),
        many.exit
    );
    t + "  (tcpkit labels the first 256 ports it sees and sums the others as port=\"other\"; it reads the listener \
         every 50 ms,\n  which a scrape's time includes and its CPU does not)\n\n"
}

fn many_series_json(many: &ManySeries) -> Value {
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let [ready, before, after] = many.peak_rss_kb;
    json!({
        "series_asked": many.asked, "max_series": many.max_series, "ports": many.ports,
        "kernel_series": many.kernel_series,
        "took_ms_median": median(many.scrapes.iter().map(|s| ms(s.took)).collect()),
        "tcpkit_cpu_ms_median": median(many.scrapes.iter().map(|s| ms(s.cpu)).collect()),
        "scrapes": many.scrapes.iter().map(|s| json!({
            "took_ms": ms(s.took), "tcpkit_cpu_ms": ms(s.cpu), "bytes": s.bytes, "sample_lines": s.sample_lines,
            "opened_series": s.opened_series, "series_dropped": s.dropped,
        })).collect::<Vec<_>>(),
        "peak_rss_kb": { "attached": ready, "before_scrapes": before, "after_scrapes": after },
        "exit": many.exit,
    })
}

/// Each program's median over runs (programs are named the same in every run of one watcher).
fn median_programs(runs: &[BpfRun]) -> Vec<ProgCost> {
    let mut names: Vec<&str> = runs.iter().flat_map(|r| r.programs.iter().map(|p| p.name.as_str())).collect();
    names.dedup();
    let mut seen = Vec::new();
    for name in names {
        if seen.iter().any(|p: &ProgCost| p.name == name) {
            continue;
        }
        let of = |f: fn(&ProgCost) -> f64| {
            median(runs.iter().map(|r| r.programs.iter().find(|p| p.name == name).map_or(0.0, f)).collect())
        };
        seen.push(ProgCost {
            name: name.to_string(),
            runs_per_conn: of(|p| p.runs_per_conn),
            ns_per_conn: of(|p| p.ns_per_conn),
        });
    }
    seen.sort_by(|x, y| y.ns_per_conn.total_cmp(&x.ns_per_conn));
    seen
}

struct Target {
    name: String,
    measured: String,
    met: bool,
}

fn pair_cell(pair: &Pair) -> String {
    format!(
        "{} -> {} ({:.3})",
        thousands(pair.base.load.rate() as u64),
        thousands(pair.traced.load.rate() as u64),
        pair.ratio()
    )
}

/// A mark on a pair during which other processes used more than BUSY_SHARE of the machine.
fn busy_note(pair: &Pair) -> String {
    let busy = pair.background();
    if busy > BUSY_SHARE {
        format!(" BUSY {:.0}%", busy * 100.0)
    } else {
        String::new()
    }
}

fn pair_json(pair: &Pair) -> Value {
    json!({ "untraced": run_json(&pair.base), "traced": run_json(&pair.traced), "ratio": pair.ratio() })
}

fn run_json(run: &Run) -> Value {
    let l = &run.load;
    let mut v = json!({
        "watcher": run.label, "threads": run.threads, "connected": l.connected, "accepted": l.accepted,
        "failed_connects": l.failed, "gave_up": l.gave_up, "wall_s": l.wall.as_secs_f64(), "conn_per_s": l.rate(),
        "background_cpu_share": run.background,
    });
    if let Some(t) = &run.traced {
        v["tracer"] = json!({
            "events_expected": t.expected, "printed": t.printed, "lost": t.lost, "complete": t.complete(),
            "cpu_us_whole_life": t.cpu.as_micros() as u64, "cpu_us_tracing": t.cpu_events.as_micros() as u64,
            "cpu_us_per_event_whole_life": t.us_per_event(t.cpu), "cpu_us_per_event_tracing": t.us_per_event(t.cpu_events),
            "wakeups": t.wakeups, "wakeups_per_event": t.wakeups_per_event(),
            "peak_rss_kb": t.peak_rss_kb, "exit": t.exit,
        });
    }
    v
}

fn load_line(o: &Options) -> String {
    let plural = |n: usize| if n == 1 { "" } else { "s" };
    let shape = match o.shape {
        Shape::Loop => "each connecting, accepting and closing both ends",
        Shape::Acceptors => "connecting and closing, one acceptor thread per family accepting and closing",
    };
    format!(
        "load: {} loopback connections per run, IPv4 and IPv6 alternately; {} client thread{}, {shape}; threads {};\n\
         {} round{}, untraced and traced runs interleaved\n\n",
        thousands(o.connections),
        o.threads,
        plural(o.threads),
        if o.no_pin { "unpinned" } else { "pinned to CPUs (tcpkit is not)" },
        o.rounds,
        plural(o.rounds),
    )
}

pub(crate) fn machine_line(m: &Machine) -> String {
    format!(
        "kernel {}, {} CPUs ({}), {}, {} backend, {}",
        m.kernel, m.cpus, m.cpu_model, m.tcpkit_version, m.backend, m.date
    )
}

fn median_ms(times: &[Duration]) -> f64 {
    median(ms_list(times))
}

fn ms_list(times: &[Duration]) -> Vec<f64> {
    times.iter().map(|d| d.as_secs_f64() * 1e3).collect()
}
