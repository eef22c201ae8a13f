//! The layout a subcommand prints in, chosen at start: one type, so the reader is compiled once per subcommand.
use std::io::{self, Write};

use crate::event::Event;
use crate::exporter::Exporter;
use crate::format::{Format, Losses};
use crate::json::Json;
use crate::text::{AcceptText, TracerText};

/// Every layout a subcommand can print in.
pub enum Layout {
    Accept(AcceptText),
    Tracer(TracerText),
    Json(Json),
    Metrics(Box<Exporter>),
}

impl Format for Layout {
    fn header(&mut self, w: &mut impl Write) -> io::Result<()> {
        match self {
            Layout::Accept(f) => f.header(w),
            Layout::Tracer(f) => f.header(w),
            Layout::Json(f) => f.header(w),
            Layout::Metrics(f) => f.header(w),
        }
    }

    fn event(&mut self, e: &Event, w: &mut impl Write) -> io::Result<()> {
        match self {
            Layout::Accept(f) => f.event(e, w),
            Layout::Tracer(f) => f.event(e, w),
            Layout::Json(f) => f.event(e, w),
            Layout::Metrics(f) => f.event(e, w),
        }
    }

    fn cgroup_made(&mut self, id: u64, path: &str) {
        match self {
            Layout::Accept(f) => f.cgroup_made(id, path),
            Layout::Tracer(f) => f.cgroup_made(id, path),
            Layout::Json(f) => f.cgroup_made(id, path),
            Layout::Metrics(f) => f.cgroup_made(id, path),
        }
    }

    fn cgroup_removed(&mut self, id: u64) {
        match self {
            Layout::Accept(f) => f.cgroup_removed(id),
            Layout::Tracer(f) => f.cgroup_removed(id),
            Layout::Json(f) => f.cgroup_removed(id),
            Layout::Metrics(f) => f.cgroup_removed(id),
        }
    }

    fn lost(&mut self, count: u64, w: &mut impl Write) -> io::Result<()> {
        match self {
            Layout::Accept(f) => f.lost(count, w),
            Layout::Tracer(f) => f.lost(count, w),
            Layout::Json(f) => f.lost(count, w),
            Layout::Metrics(f) => f.lost(count, w),
        }
    }

    fn idle(&mut self, losses: &Losses) {
        if let Layout::Metrics(f) = self {
            f.idle(losses);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::OutputArgs;
    use crate::event::{sample_event as sample, EVENT_ACCEPT, EVENT_CLOSE, EVENT_CONNECT, EVENT_FAIL};
    use crate::text::TracerColumns;

    #[test]
    fn events_with_identity_allocate_nothing_once_their_cgroup_is_known() {
        const ID: &str = "feedface0123456789abcdef0123456789abcdef0123456789abcdef01234567";
        let root = crate::identity::cgroup2_root().expect("a cgroup v2 hierarchy");
        let parent = root.join(format!("tcpkit-alloc-{}", std::process::id()));
        let dir = parent.join(format!("docker-{ID}.scope"));
        std::fs::create_dir_all(&dir).expect("making a cgroup (as root)");
        let mut e = sample();
        e.task.cgroup_id = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&dir).unwrap());
        let mut vanished = sample();
        vanished.task.cgroup_id = u64::MAX - 1;
        let args = OutputArgs { print_container: true, stats: true, ..Default::default() };
        let columns = TracerColumns { verbose: true, netns: true, error: true, lifespan: true };
        // The container's name, from docker's file under a host root of the test's own.
        let host_root = std::env::temp_dir().join(format!("tcpkit-alloc-root-{}", std::process::id()));
        let config = host_root.join(format!("var/lib/docker/containers/{ID}"));
        std::fs::create_dir_all(&config).unwrap();
        std::fs::write(config.join("config.v2.json"), br#"{"ID":"x","Name":"/alloc-test"}"#).unwrap();
        let mut text = TracerText::new(&args, columns, &host_root);
        let mut json = Json::new("tracepoint", &host_root);
        let mut out = Vec::with_capacity(16 << 20);
        // Every stats field present, as the kernel fills them with -S and JSON.
        e.stats.present = u32::MAX;
        vanished.stats.present = u32::MAX;
        for kind in [EVENT_CONNECT, EVENT_ACCEPT, EVENT_CLOSE, EVENT_FAIL] {
            e.r#type = kind;
            // The first sight of each id walks the cgroup tree; the walk may allocate.
            for event in [&e, &vanished] {
                text.event(event, &mut out).unwrap();
                json.event(event, &mut out).unwrap();
            }
            let (allocations, ()) = crate::allocations::made_by(|| {
                for _ in 0..1000 {
                    for event in [&e, &vanished] {
                        text.event(event, &mut out).unwrap();
                        json.event(event, &mut out).unwrap();
                    }
                }
            });
            assert_eq!(allocations, 0, "type {kind}");
        }
        let _ = std::fs::remove_dir(&dir);
        let _ = std::fs::remove_dir(&parent);
        let printed = String::from_utf8(out).unwrap();
        let _ = std::fs::remove_dir_all(&host_root);
        assert!(printed.lines().any(|l| l.trim_end().ends_with(" alloc-test")), "the column names the container");
        assert!(printed.contains(&format!("\"container_id\":\"{ID}\"")), "JSON has the container's ID");
        assert!(printed.contains("\"container\":\"alloc-test\""), "JSON names the container");
    }
}
