//! `tcpkit accept`: successful passive accepts, with the accepting process, as bcc's tcpaccept.
use crate::cli::AcceptArgs;
use crate::error::Result;
use crate::json::Json;
use crate::layout::Layout;
use crate::session::{self, Features, Plan};
use crate::skel::accept::AcceptSkelBuilder;
use crate::text::AcceptText;

const PLAN: Plan = Plan { ports_either_end: false, attach_first: &[], attach_last: &[] };

pub fn run(args: &AcceptArgs) -> Result<()> {
    session::run::<AcceptSkelBuilder, _>(&args.filter, &args.run, &PLAN, Features::default(), |backend| {
        match args.output.json() {
            true => Layout::Json(Json::new(backend.name())),
            false => Layout::Accept(AcceptText::new(&args.output)),
        }
    })
}
