//! `tcpkit tracer`: connect, accept and close of established TCP connections, as bcc's tcptracer.
use crate::cli::TracerArgs;
use crate::error::Result;
use crate::format::{Layout, TracerColumns, TracerText};
use crate::json::Json;
use crate::session::{self, Features, Plan};
use crate::skel::tracer::TracerSkelBuilder;

const PLAN: Plan = Plan {
    ports_either_end: true,
    // State changes first: an accept reported before them would have no owner for its close.
    attach_order: &[
        "inet_sock_set_state",
        "tp_sys_exit_accept4",
        "tp_sys_exit_accept",
        "tp_io_uring_submit_sqe",
        "tp_io_uring_task_add",
        "tp_io_uring_complete",
        "fexit_inet_csk_accept",
        "kretprobe_inet_csk_accept",
        "tp_sys_exit_connect",
        "tp_sys_enter_connect",
    ],
};

pub fn run(args: &TracerArgs) -> Result<()> {
    let json = args.output.json();
    // JSON close records always say how the connection ended; text only with -L.
    let features = Features { failed: args.failed, lifespan: args.lifespan || json };
    let columns = TracerColumns {
        verbose: args.verbose,
        netns: args.filter.netns.is_none(),
        error: args.failed,
        lifespan: args.lifespan,
    };
    session::run::<TracerSkelBuilder, _>(&args.filter, &args.run, &PLAN, features, |backend| match json {
        true => Layout::Json(Json::new(backend.name())),
        false => Layout::Tracer(TracerText::new(&args.output, columns)),
    })
}
