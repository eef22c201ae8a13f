//! `tcpkit accept`: successful passive accepts, with the accepting process, as bcc's tcpaccept.
use crate::cli::AcceptArgs;
use crate::error::Result;
use crate::format::{AcceptText, Layout};
use crate::json::Json;
use crate::session::{self, Features, Plan};
use crate::skel::accept::AcceptSkelBuilder;

const PLAN: Plan = Plan {
    ports_either_end: false,
    // Syscall exits first, the kernel hook second: an accept returning between the two is still seen once.
    attach_order: &[
        "tp_sys_exit_accept4",
        "tp_sys_exit_accept",
        "tp_io_uring_submit_sqe",
        "tp_io_uring_task_add",
        "tp_io_uring_complete",
        "fexit_inet_csk_accept",
        "kretprobe_inet_csk_accept",
    ],
};

pub fn run(args: &AcceptArgs) -> Result<()> {
    session::run::<AcceptSkelBuilder, _>(&args.filter, &args.run, &PLAN, Features::default(), |backend| {
        match args.output.json() {
            true => Layout::Json(Json::new(backend.name())),
            false => Layout::Accept(AcceptText::new(&args.output)),
        }
    })
}
