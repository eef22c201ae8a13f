//! `tcpkit metrics`' output: the series the kernel counts (src/bpf/count.bpf.h), read when Prometheus
//! scrapes, summed by workload into the families of the man page, and served over HTTP. Nothing here runs
//! per connection: the ring carries only cgroup records, for the names of workloads gone since.
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::{Duration, Instant};

use libbpf_rs::{MapCore, MapFlags, MapHandle};

use crate::event::Event;
use crate::families::{Families, Workload};
use crate::format::{Format, Losses};
use crate::http::{Exposition, Server};
use crate::identity::CgroupCache;
use crate::ports::PortSet;
use crate::skel::metrics::types::{series_key as SeriesKey, series_value as SeriesValue};

// SAFETY: generated #[repr(C)] structs of integers: any bit pattern is a valid value.
unsafe impl plain::Plain for SeriesKey {}
unsafe impl plain::Plain for SeriesValue {}

/// How many ports get a label of their own before the rest count as port="other": a server's listening
/// ports and the services its clients call, not the ephemeral ports of peers.
const PORT_LABELS: usize = 256;

pub struct Exporter {
    server: Server,
    series: Series,
}

/// The kernel's series, and what names them.
struct Series {
    map: MapHandle,
    cgroups: CgroupCache,
    /// Last labels of each cgroup seen in a series: a cgroup gone keeps them until its series go.
    workloads: HashMap<u64, Workload>,
    gone: Vec<(Instant, u64)>,
    /// The last counts of series deleted with their cgroup, by workload: a workload's counters go on from
    /// them when it runs on in another cgroup (a container restarted under the same names), so that they
    /// never go down. Kept while a cgroup of that workload lives, and --forget-after after the last one went.
    retired: HashMap<RetiredKey, (Instant, SeriesValue)>,
    /// --forget-after.
    forget_after: Duration,
    labelled_ports: HashSet<u16>,
    ports: Option<PortSet>,
    backend: &'static str,
    losses: Losses,
}

impl Exporter {
    /// `map`: the object's series map; `ports`: -P, the ports to label (the others are port="other").
    pub fn new(
        server: Server,
        map: MapHandle,
        host_root: &Path,
        ports: Option<PortSet>,
        forget_after: Duration,
        backend: &'static str,
    ) -> Exporter {
        let series = Series {
            map,
            cgroups: CgroupCache::new(host_root),
            workloads: HashMap::new(),
            gone: Vec::new(),
            retired: HashMap::new(),
            forget_after,
            labelled_ports: HashSet::new(),
            ports,
            backend,
            losses: Losses::default(),
        };
        Exporter { server, series }
    }
}

impl Series {
    fn scrape(&mut self, exposition: Exposition) -> Vec<u8> {
        self.forget_gone();
        let families = self.families();
        families.encode(exposition, self.backend, &self.losses)
    }

    /// Deletes the series of workloads gone for --forget-after, so that a node making containers all day keeps
    /// room for new ones; their counts go on in `retired` while their workload does.
    fn forget_gone(&mut self) {
        let forget_after = self.forget_after;
        let due: HashSet<u64> =
            self.gone.iter().filter(|(at, _)| at.elapsed() >= forget_after).map(|&(_, id)| id).collect();
        if due.is_empty() {
            return;
        }
        self.gone.retain(|(at, _)| at.elapsed() < forget_after);
        let keys: Vec<Vec<u8>> = self.map.keys().collect();
        for key in keys {
            let k = decode::<SeriesKey>(&key);
            if !due.contains(&k.cgroup_id) {
                continue;
            }
            if let Ok(Some(value)) = self.map.lookup(&key, MapFlags::ANY) {
                let workload = self.workloads.get(&k.cgroup_id).cloned().unwrap_or_default();
                let key = (workload, k.kind, k.direction, k.port, k.code);
                let entry = self.retired.entry(key).or_insert((Instant::now(), SeriesValue::default()));
                *entry = (Instant::now(), add(&entry.1, &decode(&value)));
            }
            let _ = self.map.delete(&key);
        }
        for id in due {
            self.workloads.remove(&id);
        }
    }

    fn workload(&mut self, cgroup_id: u64) -> Workload {
        if let Some(identity) = self.cgroups.lookup(cgroup_id) {
            let names = &identity.names;
            let workload = Workload {
                namespace: names.namespace.clone().unwrap_or_default(),
                pod: names.pod.clone().unwrap_or_default(),
                container: names.container.clone().unwrap_or_default(),
                unit: if identity.container_id.is_none() {
                    identity.unit.clone().unwrap_or_default()
                } else {
                    String::new()
                },
            };
            self.workloads.insert(cgroup_id, workload);
        }
        self.workloads.get(&cgroup_id).cloned().unwrap_or_default()
    }

    fn port_label(&mut self, port: u16) -> String {
        let listed = self.ports.as_ref().is_none_or(|p| p.contains(port));
        if listed && (self.labelled_ports.contains(&port) || self.labelled_ports.len() < PORT_LABELS) {
            self.labelled_ports.insert(port);
            return port.to_string();
        }
        "other".into()
    }

    /// The kernel's series, summed into families by label set.
    fn families(&mut self) -> Families {
        let mut f = Families::default();
        let keys: Vec<Vec<u8>> = self.map.keys().collect();
        for key in keys {
            // A series deleted between the two calls (a workload forgotten) is simply not in this scrape.
            let Ok(Some(value)) = self.map.lookup(&key, MapFlags::ANY) else { continue };
            let (k, v) = (decode::<SeriesKey>(&key), decode::<SeriesValue>(&value));
            let workload = self.workload(k.cgroup_id);
            let port = self.port_label(k.port);
            f.add(&k, workload, port, &v);
        }
        // A workload's retired counts, while a cgroup of it lives or for --forget-after after the last went.
        let live: HashSet<&Workload> = self.workloads.values().collect();
        let forget_after = self.forget_after;
        self.retired.retain(|(w, ..), (at, _)| live.contains(w) || at.elapsed() < forget_after);
        let retired: Vec<(RetiredKey, SeriesValue)> = self.retired.iter().map(|(k, (_, v))| (k.clone(), *v)).collect();
        for ((workload, kind, direction, port, code), v) in retired {
            let k = SeriesKey { kind, direction, port, code, ..Default::default() };
            let port = self.port_label(port);
            f.add(&k, workload, port, &v);
        }
        f
    }
}

/// A retired series: its workload and its key without the cgroup (kind, direction, port, code).
type RetiredKey = (Workload, u8, u8, u16, u16);

/// The sum of two series' counts.
fn add(a: &SeriesValue, b: &SeriesValue) -> SeriesValue {
    let mut sum = *a;
    sum.count += b.count;
    sum.sum_ns += b.sum_ns;
    sum.timed += b.timed;
    sum.bytes_sent += b.bytes_sent;
    sum.bytes_received += b.bytes_received;
    sum.retransmits += b.retransmits;
    for (s, n) in sum.buckets.iter_mut().zip(b.buckets) {
        *s += n;
    }
    sum
}

/// A key or value as the kernel gave it: its bytes need not be aligned for the type.
fn decode<T: plain::Plain + Default>(bytes: &[u8]) -> T {
    let mut t = T::default();
    let _ = plain::copy_from_bytes(&mut t, bytes);
    t
}

impl Format for Exporter {
    fn header(&mut self, _w: &mut impl std::io::Write) -> std::io::Result<()> {
        Ok(())
    }

    fn event(&mut self, _e: &Event, _w: &mut impl std::io::Write) -> std::io::Result<()> {
        Ok(()) // counted in the kernel: no connection's record comes through the ring
    }

    fn cgroup_made(&mut self, id: u64, path: &str) {
        self.series.cgroups.learn(id, path);
    }

    fn cgroup_removed(&mut self, id: u64) {
        self.series.cgroups.removed(id);
        self.series.gone.push((Instant::now(), id));
    }

    fn idle(&mut self, losses: &Losses) {
        self.series.losses = *losses;
        let series = &mut self.series;
        self.server.serve(Duration::ZERO, |exposition| series.scrape(exposition));
    }
}
