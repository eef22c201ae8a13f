//! `tcpkit accept`: successful passive accepts, with the accepting process, as bcc's tcpaccept.
use crate::cli::AcceptArgs;
use crate::error::Result;
use crate::json::Json;
use crate::layout::Layout;
use crate::session::{self, Features, Plan};
use crate::skel::accept::AcceptSkelBuilder;
use crate::text::AcceptText;

const PLAN: Plan = Plan {
    ports_either_end: false,
    // Handshakes first: an accept reported before its handshake was seen has no queue wait.
    attach_first: &["inet_sock_set_state_handshake", "nested_handshake"],
    attach_last: &[],
    owners_always: false,
};

pub fn run(args: &AcceptArgs) -> Result<()> {
    let features = Features {
        stats: args.output.stats || args.output.json(),
        cgroups: args.output.names_cgroups(),
        ..Features::default()
    };
    session::run::<AcceptSkelBuilder, _>(&args.filter, &args.run, &PLAN, features, |backend, _| {
        Ok(match args.output.json() {
            true => Layout::Json(Json::new(backend.name(), &args.filter.host_root)),
            false => Layout::Accept(AcceptText::new(&args.output, &args.filter.host_root)),
        })
    })
}
