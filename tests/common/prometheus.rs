//! A real Prometheus for the tests of `tcpkit metrics`: Debian's package (2.42 on bookworm), run with its own
//! configuration and data in a temporary directory, scraping one target every second, and asked through its
//! HTTP API; and promtool, which lints what tcpkit serves and checks and tests rule files.
//!
//! Self-contained (std, serde_json and nix only), so that a test file may include it either as
//! `#[path = "common/prometheus.rs"] mod prometheus;` or through `pub mod prometheus;` in common/mod.rs.
// A test binary uses some of these helpers, never all of them (one lints rules, another only queries).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

/// How long Prometheus may take to get ready, and a scrape to land; generous for qemu's emulated guests
/// (here it is ready in well under a second, and scrapes first about 5 s after start: its discovery manager
/// hands over even static targets on a 5 s tick).
pub const PROMETHEUS_DEADLINE: Duration = Duration::from_secs(60);

/// How long one promtool run or one API request may take.
const TOOL_DEADLINE: Duration = Duration::from_secs(30);

const MISSING: &str = "Debian's prometheus package is missing: scripts/setup.sh --test installs it";

/// What a test adds to the default setup (one job, `tcpkit`, scraping its target every second).
#[derive(Default)]
pub struct Extra<'a> {
    /// YAML lines added to the job, unindented: `metrics_path: /other`, `honor_labels: true`. Prometheus 2.42
    /// has no `scrape_protocols` (2.49 added it) nor `enable_compression`: it always asks for OpenMetrics
    /// first; `--enable-feature=native-histograms` in `flags` makes it ask for protobuf before that.
    pub job: &'a str,
    /// Rule files it loads and evaluates every second.
    pub rule_files: &'a [&'a Path],
    /// Command-line flags added to the ones it is started with.
    pub flags: &'a [&'a str],
}

/// A real Prometheus (Debian's package), with its own config and data in a temporary directory, scraping
/// `target` every second. Dropping it kills it and removes the directory.
pub struct Prometheus {
    child: Child,
    dir: PathBuf,
    port: u16,
}

impl Prometheus {
    /// Starts it scraping `target` ("127.0.0.1:PORT") and returns once it is ready to answer queries (its
    /// first scrape comes about 5 s later: wait_scrapes waits for it). It dies with the thread that started
    /// it: start it in the test's own thread, not in a helper thread that ends first.
    pub fn start(target: &str) -> Prometheus {
        Self::start_with(target, &Extra::default())
    }

    /// As start, with more configuration or flags.
    pub fn start_with(target: &str, extra: &Extra) -> Prometheus {
        // The free port is found by binding and releasing it, so another process may take it first: then
        // Prometheus ends saying so, and it is tried again on another port (in a new directory: dropping the
        // one that ended removed its own).
        for _ in 0..5 {
            let dir = tempfile_path("prometheus");
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
            let config = dir.join("prometheus.yml");
            std::fs::write(&config, config_yaml(target, extra)).expect("writing prometheus.yml");
            let port = free_port();
            let log = File::create(dir.join("stderr")).expect("creating Prometheus's log");
            let mut cmd = Command::new("prometheus");
            // Killed with the test thread that started it, also when the test binary itself is killed (a
            // timeout), which runs no Drop: a Prometheus left behind would scrape on forever.
            // SAFETY: prctl is async-signal-safe and touches nothing of the parent's.
            unsafe {
                cmd.pre_exec(|| {
                    nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL).map_err(std::io::Error::from)
                });
            }
            let child = cmd
                .arg(format!("--config.file={}", config.display()))
                .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .arg("--storage.tsdb.retention.time=1h")
                // Info, not warn: its start-up steps are what a test that waited in vain needs to see, and
                // they go to a file that only a failure prints.
                .arg("--log.level=info")
                .args(extra.flags)
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .unwrap_or_else(|e| {
                    let _ = std::fs::remove_dir_all(&dir);
                    if e.kind() == ErrorKind::NotFound {
                        panic!("{MISSING}");
                    }
                    panic!("starting prometheus: {e}")
                });
            let mut me = Prometheus { child, dir, port };
            match me.wait_ready() {
                Ok(()) => return me,
                Err(log) if log.contains("address already in use") => continue,
                Err(log) => panic!("Prometheus ended before it was ready; its log:\n{log}"),
            }
        }
        panic!("Prometheus found no free port in 5 tries");
    }

    /// Waits for /-/ready; Err(its log) when it ended first, a panic when it took too long.
    fn wait_ready(&mut self) -> Result<(), String> {
        let end = Instant::now() + PROMETHEUS_DEADLINE;
        loop {
            if self.child.try_wait().expect("waiting for prometheus").is_some() {
                return Err(self.log());
            }
            if matches!(self.get("/-/ready"), Ok((200, _))) {
                return Ok(());
            }
            assert!(
                Instant::now() < end,
                "Prometheus was not ready within {PROMETHEUS_DEADLINE:?}; its log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Where its HTTP API listens: 127.0.0.1:PORT.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    /// What it wrote on stdout and stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("stderr")).unwrap_or_default()
    }

    /// Waits until `n` scrapes of the target that started after this call have succeeded, so that a query
    /// sees what the target counted before it. Each scrape's samples are committed together with its `up`
    /// sample, whose timestamp is the scrape's start.
    pub fn wait_scrapes(&self, n: u32) {
        let since = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64();
        let end = Instant::now() + PROMETHEUS_DEADLINE;
        let mut seen: Vec<f64> = Vec::new();
        while seen.len() < n as usize {
            // timestamp() of a bare selector is the sample's own time, of any other expression the query's.
            for (_, at) in self.query(r#"timestamp(up{job="tcpkit"}) and up{job="tcpkit"} == 1"#) {
                if at >= since && !seen.contains(&at) {
                    seen.push(at);
                }
            }
            if seen.len() >= n as usize {
                break;
            }
            if Instant::now() >= end {
                let (health, error) = self.target_health();
                panic!(
                    "{} of {n} scrapes succeeded within {PROMETHEUS_DEADLINE:?}; the target is {health} ({error}); \
                     Prometheus's log:\n{}",
                    seen.len(),
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// An instant query, evaluated now: the result's series as (labels, value) pairs; a scalar result is one
    /// pair with no labels. Panics with Prometheus's error text when it rejects the query.
    pub fn query(&self, promql: &str) -> Vec<(BTreeMap<String, String>, f64)> {
        let data = self.api(&format!("/api/v1/query?query={}", url_encode(promql)));
        let sample = |value: &Value| -> f64 {
            // [unix time, "value"]; the value may be "NaN", "+Inf" or "-Inf", which parse as f64 does.
            let text = value[1].as_str().unwrap_or_else(|| panic!("{promql}: a value that is no sample: {value}"));
            text.parse().unwrap_or_else(|e| panic!("{promql}: value {text:?}: {e}"))
        };
        match data["resultType"].as_str() {
            Some("vector") => data["result"]
                .as_array()
                .unwrap_or_else(|| panic!("{promql}: no result list in {data}"))
                .iter()
                .map(|series| {
                    let labels = series["metric"]
                        .as_object()
                        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string())))
                        .into_iter()
                        .flatten()
                        .collect();
                    (labels, sample(&series["value"]))
                })
                .collect(),
            Some("scalar") => vec![(BTreeMap::new(), sample(&data["result"]))],
            _ => panic!("{promql}: only vector and scalar results are read here, not {data}"),
        }
    }

    /// The scrape's health as /api/v1/targets reports it: ("up", ""), ("down", its last error), or
    /// ("unknown", "") before the first scrape (and before the target is even listed, about 5 s after start).
    pub fn target_health(&self) -> (String, String) {
        let data = self.api("/api/v1/targets?state=active");
        let target = data["activeTargets"].as_array().and_then(|t| t.iter().find(|t| t["labels"]["job"] == "tcpkit"));
        let Some(target) = target else { return ("unknown".into(), String::new()) };
        let text = |key: &str| target[key].as_str().unwrap_or_default().to_string();
        (text("health"), text("lastError"))
    }

    /// Waits until the scrape's health is `health` ("up" or "down"); returns the last error it reports.
    pub fn wait_health(&self, health: &str) -> String {
        let end = Instant::now() + PROMETHEUS_DEADLINE;
        loop {
            let (now, error) = self.target_health();
            if now == health {
                return error;
            }
            assert!(
                Instant::now() < end,
                "the target was not {health} within {PROMETHEUS_DEADLINE:?} but {now} ({error}); Prometheus's log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The `data` of an API answer; panics with Prometheus's error text when its status is not success.
    fn api(&self, path_and_query: &str) -> Value {
        let (code, body) = self.get(path_and_query).unwrap_or_else(|e| {
            panic!("GET {path_and_query} from Prometheus at {}: {e}; its log:\n{}", self.addr(), self.log())
        });
        let answer: Value = serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("GET {path_and_query}: HTTP {code}, not JSON ({e}): {body}"));
        if code != 200 || answer["status"] != "success" {
            panic!(
                "GET {path_and_query}: HTTP {code}, {}: {}",
                answer["errorType"].as_str().unwrap_or("no error type"),
                answer["error"].as_str().unwrap_or(&body)
            );
        }
        answer["data"].clone()
    }

    /// An HTTP/1.0 GET: the status code and the body (the server closes the connection after it).
    fn get(&self, path_and_query: &str) -> Result<(u16, String), String> {
        let mut stream = TcpStream::connect_timeout(&self.addr(), Duration::from_secs(2)).map_err(|e| e.to_string())?;
        stream.set_read_timeout(Some(TOOL_DEADLINE)).unwrap();
        stream.set_write_timeout(Some(TOOL_DEADLINE)).unwrap();
        write!(stream, "GET {path_and_query} HTTP/1.0\r\nHost: {}\r\n\r\n", self.addr()).map_err(|e| e.to_string())?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).map_err(|e| e.to_string())?;
        let answer = String::from_utf8_lossy(&answer);
        let (head, body) = answer.split_once("\r\n\r\n").ok_or_else(|| format!("no end of headers in {answer:?}"))?;
        let code =
            head.split(' ').nth(1).and_then(|c| c.parse().ok()).ok_or_else(|| format!("no status code in {head:?}"))?;
        Ok((code, body.to_string()))
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The configuration: everything every second (scrapes, and the rules a test loads), one job.
fn config_yaml(target: &str, extra: &Extra) -> String {
    let mut yaml = String::from("global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n");
    if !extra.rule_files.is_empty() {
        yaml.push_str("rule_files:\n");
        for file in extra.rule_files {
            yaml.push_str(&format!("  - {}\n", serde_json::to_string(&file.to_string_lossy()).unwrap()));
        }
    }
    yaml.push_str("scrape_configs:\n  - job_name: tcpkit\n");
    for line in extra.job.lines() {
        yaml.push_str(&format!("    {line}\n"));
    }
    yaml.push_str(&format!("    static_configs:\n      - targets: [{}]\n", serde_json::to_string(target).unwrap()));
    yaml
}

/// A loopback port that nothing listened on a moment ago.
fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).and_then(|l| l.local_addr()).expect("binding 127.0.0.1:0").port()
}

/// Percent-encodes all but RFC 3986's unreserved characters.
fn url_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `promtool check metrics` on a scrape's body: Ok, or Err(what promtool said). It fails lint problems (a
/// counter without _total, a missing HELP: exit 3) as well as parse errors (exit 1). It reads the text format
/// (0.0.4): an OpenMetrics body, whose counter family `x` has the sample `x_total`, fails with "no help text".
pub fn promtool_check_metrics(body: &[u8]) -> Result<(), String> {
    promtool(&["check", "metrics"], body)
}

/// `promtool check rules FILE`: Ok, or Err(what promtool said).
pub fn promtool_check_rules(path: &Path) -> Result<(), String> {
    promtool(&["check", "rules", &path.to_string_lossy()], b"")
}

/// `promtool test rules FILE` (rule unit tests): Ok, or Err(what promtool said).
pub fn promtool_test_rules(path: &Path) -> Result<(), String> {
    promtool(&["test", "rules", &path.to_string_lossy()], b"")
}

/// Runs promtool with `input` on its stdin, bounded in time; Ok when it exits 0, else Err(its output).
fn promtool(args: &[&str], input: &[u8]) -> Result<(), String> {
    // Its stdout and stderr go to one file: no pipe to drain, and the lines stay in the order it wrote them.
    let out = tempfile_path("promtool");
    let file = File::create(&out).expect("creating promtool's output file");
    let mut child = Command::new("promtool")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .spawn()
        .unwrap_or_else(
            |e| if e.kind() == ErrorKind::NotFound { panic!("{MISSING}") } else { panic!("promtool: {e}") },
        );
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    // A writer of its own: promtool may stop reading early, and a full pipe must not block the wait below.
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let status = wait_bounded(&mut child, TOOL_DEADLINE);
    let _ = writer.join();
    let said = std::fs::read_to_string(&out).unwrap_or_default();
    let _ = std::fs::remove_file(&out);
    match status {
        Some(s) if s.success() => Ok(()),
        Some(s) => Err(format!("promtool {} ({s}): {said}", args.join(" "))),
        None => panic!("promtool {} did not end within {TOOL_DEADLINE:?}: {said}", args.join(" ")),
    }
}

/// The child's exit status, or None after killing it when it did not end in time.
fn wait_bounded(child: &mut Child, deadline: Duration) -> Option<ExitStatus> {
    let end = Instant::now() + deadline;
    while Instant::now() < end {
        if let Some(status) = child.try_wait().expect("waiting for a child") {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

/// A path in the temporary directory that no other test of any binary uses (one per Prometheus and per
/// promtool run: tests of one binary run on threads side by side).
fn tempfile_path(what: &str) -> PathBuf {
    static MADE: AtomicUsize = AtomicUsize::new(0);
    let n = MADE.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!("tcpkit-{what}-{}-{n}", std::process::id()))
}
