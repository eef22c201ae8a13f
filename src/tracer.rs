//! `tcpkit tracer`: connect, accept and close of established TCP connections, as bcc's tcptracer.
use crate::cli::TracerArgs;
use crate::error::Result;
use crate::format::{Layout, TracerText};
use crate::json::Json;
use crate::session::{self, Plan};
use crate::skel::tracer::TracerSkelBuilder;

const PLAN: Plan = Plan {
    ports_either_end: true,
    // State changes first: an accept reported before them would have no owner for its close.
    attach_order: &[
        "inet_sock_set_state",
        "tp_sys_exit_accept4",
        "tp_sys_exit_accept",
        "fexit_inet_csk_accept",
        "kretprobe_inet_csk_accept",
    ],
};

pub fn run(args: &TracerArgs) -> Result<()> {
    session::run::<TracerSkelBuilder, _>(&args.filter, &args.run, &PLAN, |backend| match args.output.json() {
        true => Layout::Json(Json::new(backend.name())),
        false => Layout::Tracer(TracerText::new(&args.output, args.verbose, args.filter.netns.is_none())),
    })
}
