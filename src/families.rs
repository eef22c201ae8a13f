//! The metric families of `tcpkit metrics`, summed from the kernel's series by label set, and their
//! encoding in Prometheus's text format or OpenMetrics (prometheus-client: the project's own encoders).
use std::collections::BTreeMap;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::format::Losses;
use crate::http::Exposition;
use crate::skel::metrics::types::{series_key as SeriesKey, series_value as SeriesValue};

/// Bucket bounds in ns, by histogram (count.bpf.h, enum hist_kind), written into the kernel's rodata: the
/// one copy. u64::MAX pads a histogram with fewer bounds. Handshakes: a lost SYN costs the initial RTO
/// (1 s), then 2, 4 and 8 s more, so 2, 3.5, 7.5 and 15.5 s each end the bucket of handshakes that lost 1,
/// 2, 3 and 4 SYNs, and 1 s the bucket of those that lost none.
pub const HISTOGRAM_BOUNDS_NS: [[u64; HIST_BOUNDS]; 3] = [
    [
        100 * US,
        500 * US,
        MS,
        2_500 * US,
        5 * MS,
        10 * MS,
        25 * MS,
        50 * MS,
        100 * MS,
        250 * MS,
        500 * MS,
        SEC,
        2 * SEC,
        3_500 * MS,
        7_500 * MS,
        15_500 * MS,
    ],
    [
        10 * US,
        100 * US,
        500 * US,
        MS,
        5 * MS,
        10 * MS,
        50 * MS,
        100 * MS,
        250 * MS,
        500 * MS,
        SEC,
        2_500 * MS,
        5 * SEC,
        10 * SEC,
        30 * SEC,
        60 * SEC,
    ],
    [
        MS,
        10 * MS,
        100 * MS,
        500 * MS,
        SEC,
        5 * SEC,
        10 * SEC,
        30 * SEC,
        60 * SEC,
        300 * SEC,
        600 * SEC,
        1_800 * SEC,
        3_600 * SEC,
        14_400 * SEC,
        86_400 * SEC,
        u64::MAX,
    ],
];
const HIST_BOUNDS: usize = 16;
const US: u64 = 1_000;
const MS: u64 = 1_000_000;
const SEC: u64 = 1_000_000_000;
const HIST_HANDSHAKE: usize = 0;
const HIST_QUEUE: usize = 1;
const HIST_DURATION: usize = 2;

/// Series kinds, directions and ends (count.bpf.h, tcpkit.h).
const SERIES_CONNECT: u8 = 1;
const SERIES_ACCEPT: u8 = 2;
const SERIES_FAIL: u8 = 3;
const SERIES_CLOSE: u8 = 4;
const DIRECTION_UNKNOWN: u8 = 0;
const DIRECTIONS: [&str; 3] = ["unknown", "out", "in"];
const END_NAMES: [&str; 6] = ["unknown", "close", "peer", "abort", "reset", "timeout"];

/// The workload labels every series carries: Kubernetes namespace and pod, container, systemd unit (when
/// there is no container); empty where not known.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Workload {
    pub namespace: String,
    pub pod: String,
    pub container: String,
    pub unit: String,
}

/// A workload, a direction, a port label.
type ByPort = (Workload, &'static str, String);

/// One scrape's families, keyed by their labels; sorted, so that scrapes list series in the same order.
#[derive(Debug, Default)]
pub struct Families {
    opened: BTreeMap<ByPort, u64>,
    failures: BTreeMap<(Workload, String, String), u64>,
    closed: BTreeMap<(ByPort, &'static str), u64>,
    /// Opened minus closed, of the connections tcpkit saw open.
    active: BTreeMap<ByPort, i64>,
    handshake: BTreeMap<(Workload, String), Histogram>,
    queue: BTreeMap<(Workload, String), Histogram>,
    duration: BTreeMap<(Workload, &'static str), Histogram>,
    sent: BTreeMap<ByPort, u64>,
    received: BTreeMap<ByPort, u64>,
    retransmits: BTreeMap<ByPort, u64>,
    /// Set at encoding.
    backend: &'static str,
    losses: Losses,
}

/// A histogram as the kernel keeps it: buckets not cumulative, the sum in ns.
#[derive(Debug, Default)]
struct Histogram {
    kind: usize,
    buckets: [u64; HIST_BOUNDS],
    sum_ns: u64,
    count: u64,
}

impl Histogram {
    fn add(&mut self, kind: usize, v: &SeriesValue) {
        self.kind = kind;
        for (b, n) in self.buckets.iter_mut().zip(v.buckets) {
            *b += n;
        }
        self.sum_ns += v.sum_ns;
        self.count += v.timed;
    }

    /// (upper bound in seconds, events in that bucket only), +Inf last, as prometheus-client wants them.
    fn buckets(&self) -> Vec<(f64, u64)> {
        let bounds = HISTOGRAM_BOUNDS_NS[self.kind].iter().take_while(|&&b| b != u64::MAX);
        let mut out: Vec<(f64, u64)> = bounds.zip(self.buckets).map(|(&b, n)| (b as f64 / 1e9, n)).collect();
        let below: u64 = out.iter().map(|&(_, n)| n).sum();
        out.push((f64::INFINITY, self.count.saturating_sub(below)));
        out
    }
}

impl Families {
    /// Adds one kernel series, its workload and port label resolved.
    pub fn add(&mut self, key: &SeriesKey, workload: Workload, port: String, v: &SeriesValue) {
        let direction = DIRECTIONS.get(usize::from(key.direction)).copied().unwrap_or("unknown");
        match key.kind {
            SERIES_CONNECT | SERIES_ACCEPT => {
                let hist = if key.kind == SERIES_CONNECT {
                    (&mut self.handshake, HIST_HANDSHAKE)
                } else {
                    (&mut self.queue, HIST_QUEUE)
                };
                hist.0.entry((workload.clone(), port.clone())).or_default().add(hist.1, v);
                let by_port = (workload, direction, port);
                *self.active.entry(by_port.clone()).or_default() += v.count as i64;
                *self.opened.entry(by_port).or_default() += v.count;
            }
            SERIES_FAIL => *self.failures.entry((workload, port, errno_name(key.code))).or_default() += v.count,
            SERIES_CLOSE => {
                let end = END_NAMES.get(usize::from(key.code)).copied().unwrap_or("unknown");
                self.duration.entry((workload.clone(), direction)).or_default().add(HIST_DURATION, v);
                let by_port = (workload, direction, port);
                if key.direction != DIRECTION_UNKNOWN {
                    *self.active.entry(by_port.clone()).or_default() -= v.count as i64;
                }
                *self.sent.entry(by_port.clone()).or_default() += v.bytes_sent;
                *self.received.entry(by_port.clone()).or_default() += v.bytes_received;
                *self.retransmits.entry(by_port.clone()).or_default() += v.retransmits;
                *self.closed.entry((by_port, end)).or_default() += v.count;
            }
            _ => {}
        }
    }

    /// The scrape's body.
    pub fn encode(mut self, exposition: Exposition, backend: &'static str, losses: &Losses) -> Vec<u8> {
        self.backend = backend;
        self.losses = *losses;
        let mut registry = Registry::default();
        registry.register_collector(Box::new(self));
        let mut body = String::new();
        let encoded = match exposition {
            Exposition::OpenMetrics100 => prometheus_client::encoding::text::encode(&mut body, &registry),
            Exposition::Prometheus004 => prometheus_client::encoding::prometheus_text::encode(&mut body, &registry),
        };
        // Writing into a String cannot fail; a failure would be the encoder refusing a name, a bug.
        encoded.expect("encoding metrics into a string");
        body.into_bytes()
    }
}

/// The errno name of a failure (ECONNREFUSED; ECANCELED for an abandoned connect).
fn errno_name(code: u16) -> String {
    match nix::errno::Errno::from_raw(code.into()) {
        nix::errno::Errno::UnknownErrno => format!("errno-{code}"),
        known => format!("{known:?}"),
    }
}

fn workload_labels<'a>(w: &'a Workload, more: &[(&'static str, &'a str)]) -> Vec<(&'static str, &'a str)> {
    let mut labels = vec![
        ("namespace", w.namespace.as_str()),
        ("pod", w.pod.as_str()),
        ("container", w.container.as_str()),
        ("unit", w.unit.as_str()),
    ];
    labels.extend_from_slice(more);
    labels
}

type Fmt = Result<(), std::fmt::Error>;

fn counters<'a, K: 'a>(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: impl IntoIterator<Item = (&'a K, &'a u64)>,
    labels: impl Fn(&'a K) -> Vec<(&'static str, &'a str)>,
) -> Fmt {
    let mut m = e.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (k, n) in series {
        m.encode_family(&labels(k))?.encode_counter::<NoLabelSet, _, u64>(n, None)?;
    }
    Ok(())
}

fn histograms<'a, K: 'a>(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: impl IntoIterator<Item = (&'a K, &'a Histogram)>,
    labels: impl Fn(&'a K) -> Vec<(&'static str, &'a str)>,
) -> Fmt {
    let mut m = e.encode_descriptor(name, help, None, MetricType::Histogram)?;
    for (k, h) in series {
        let sum = h.sum_ns as f64 / 1e9;
        m.encode_family(&labels(k))?.encode_histogram::<NoLabelSet>(sum, h.count, &h.buckets(), None)?;
    }
    Ok(())
}

fn by_port((w, direction, port): &ByPort) -> Vec<(&'static str, &str)> {
    workload_labels(w, &[("direction", direction), ("port", port)])
}

impl Collector for Families {
    fn encode(&self, mut e: DescriptorEncoder) -> Fmt {
        counters(
            &mut e,
            "tcpkit_connections_opened",
            "Connections established: connected (out) or accepted (in)",
            &self.opened,
            by_port,
        )?;
        counters(
            &mut e,
            "tcpkit_connect_failures",
            "Connects that failed, by errno (ECANCELED: given up by the application)",
            &self.failures,
            |(w, port, reason)| workload_labels(w, &[("port", port), ("reason", reason)]),
        )?;
        counters(
            &mut e,
            "tcpkit_connections_closed",
            "Connections ended, by how they ended",
            &self.closed,
            |(k, end)| {
                let mut l = by_port(k);
                l.push(("end", end));
                l
            },
        )?;
        let mut m = e.encode_descriptor(
            "tcpkit_connections_active",
            "Connections open now, of those tcpkit saw open",
            None,
            MetricType::Gauge,
        )?;
        for (k, n) in &self.active {
            m.encode_family(&by_port(k))?.encode_gauge(&(*n).max(0))?;
        }
        histograms(
            &mut e,
            "tcpkit_handshake_seconds",
            "From connect() to established, of established connects",
            &self.handshake,
            |(w, port)| workload_labels(w, &[("port", port)]),
        )?;
        histograms(
            &mut e,
            "tcpkit_accept_queue_seconds",
            "From the completed handshake to the accept() that took it",
            &self.queue,
            |(w, port)| workload_labels(w, &[("port", port)]),
        )?;
        histograms(
            &mut e,
            "tcpkit_connection_duration_seconds",
            "How long connections lived, of those tcpkit saw open",
            &self.duration,
            |(w, direction)| workload_labels(w, &[("direction", direction)]),
        )?;
        counters(
            &mut e,
            "tcpkit_sent_bytes",
            "Bytes the peer acknowledged, of connections ended",
            &self.sent,
            by_port,
        )?;
        counters(
            &mut e,
            "tcpkit_received_bytes",
            "Bytes received in order, of connections ended",
            &self.received,
            by_port,
        )?;
        counters(
            &mut e,
            "tcpkit_retransmits",
            "Segments sent again, of connections ended",
            &self.retransmits,
            by_port,
        )?;
        let none: [(&str, &str); 0] = [];
        let lost = [(&(), &self.losses.events)];
        counters(
            &mut e,
            "tcpkit_events_lost",
            "Events the kernel could not count (a full scratch or ring)",
            lost,
            |_| none.to_vec(),
        )?;
        let dropped = [(&(), &self.losses.series_dropped)];
        counters(
            &mut e,
            "tcpkit_series_dropped",
            "Events not counted: their series found the kernel's table full (--max-series)",
            dropped,
            |_| none.to_vec(),
        )?;
        let info =
            prometheus_client::metrics::info::Info::new([("version", crate::VERSION), ("backend", self.backend)]);
        info.encode(e.encode_descriptor("tcpkit_build", "The running tcpkit", None, info.metric_type())?)?;
        Ok(())
    }
}
