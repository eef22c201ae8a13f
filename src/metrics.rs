//! `tcpkit metrics`: the tracer's hooks, counting in the kernel, served to Prometheus over HTTP.
use libbpf_rs::MapHandle;

use crate::cli::MetricsArgs;
use crate::error::{Context, Error, Result};
use crate::exporter::Exporter;
use crate::http::Server;
use crate::layout::Layout;
use crate::session::{self, Features};
use crate::skel::metrics::MetricsSkelBuilder;

pub fn run(args: &MetricsArgs) -> Result<()> {
    if args.run.count.is_some() {
        return Err(Error::usage(
            "-c counts printed events, and tcpkit metrics prints none: stop it with -d or a signal",
        ));
    }
    // Before anything is loaded: a bad address or a port in use ends here, in a moment.
    let server = Server::bind(&args.listen)?;
    eprintln!("tcpkit: serving metrics at http://{}/metrics", server.local_addr());
    // -P labels ports instead of filtering them: every connection counts, under its port or port="other".
    let mut filter = args.filter.clone();
    let ports = filter.ports.take();
    let features = Features { failed: true, lifespan: true, stats: true, cgroups: true, series: args.max_series };
    session::run::<MetricsSkelBuilder, _>(&filter, &args.run, &crate::tracer::PLAN, features, |backend, object| {
        let map = MapHandle::try_from(&session::map(object, "series")?).context(|| "opening the series map".into())?;
        let exporter = Exporter::new(server, map, &args.filter.host_root, ports, args.forget_after, backend.name());
        Ok(Layout::Metrics(Box::new(exporter)))
    })
}
