//! `tcpkit tracer`: connect, accept and close of established TCP connections, as bcc's tcptracer.
use crate::cli::TracerArgs;
use crate::error::Result;
use crate::json::Json;
use crate::layout::Layout;
use crate::session::{self, Features, Plan};
use crate::skel::tracer::TracerSkelBuilder;
use crate::text::{TracerColumns, TracerText};

/// The tracer's object's plan; `tcpkit metrics` loads the same programs (metrics.bpf.c is this object).
pub const PLAN: Plan = Plan {
    ports_either_end: true,
    // State changes first: an accept reported before them would have no owner for its close.
    attach_first: &["inet_sock_set_state", "nested_state_change"],
    attach_last: &["tp_sys_exit_connect", "tp_sys_enter_connect"],
    owners_always: true,
};

pub fn run(args: &TracerArgs) -> Result<()> {
    let json = args.output.json();
    // JSON records always say how the connection ended and how good it was; text only with -L and -S.
    let features = Features {
        failed: args.failed,
        lifespan: args.lifespan || json,
        stats: args.output.stats || json,
        cgroups: args.output.names_cgroups(),
        ..Features::default()
    };
    let columns = TracerColumns {
        verbose: args.verbose,
        netns: args.filter.netns.is_none(),
        error: args.failed,
        lifespan: args.lifespan,
    };
    session::run::<TracerSkelBuilder, _>(&args.filter, &args.run, &PLAN, features, |backend, _| {
        Ok(match json {
            true => Layout::Json(Json::new(backend.name(), &args.filter.host_root)),
            false => Layout::Tracer(TracerText::new(&args.output, columns, &args.filter.host_root)),
        })
    })
}
