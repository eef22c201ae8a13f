//! `tcpkit accept`: successful passive accepts, with the accepting process, as bcc's tcpaccept.
use std::mem::MaybeUninit;

use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::{Link, OpenObject};

use crate::backend::{self, Backend};
use crate::cli::AcceptArgs;
use crate::error::{Context, Result};
use crate::filter::{Filters, PinnedSets};
use crate::format::AcceptText;
use crate::skel::accept::{AcceptSkel, AcceptSkelBuilder};
use crate::{kernel, preflight, ring};

pub fn run(args: &AcceptArgs) -> Result<()> {
    let filters = Filters::from_args(&args.filter)?;
    preflight::check()?;
    let pinned = filters.open_pinned_maps()?;
    kernel::set_libbpf_log(args.run.debug);
    let mut slots = [const { MaybeUninit::uninit() }; 3];
    let (_backend, (skel, _links)) =
        backend::load_first(args.run.backend, &mut slots, args.run.debug, |backend, slot| {
            load(backend, slot, &filters, &pinned)
        })?;
    let bss = skel.maps.bss_data.as_deref().expect("the accept object has a .bss");
    ring::run(&skel.maps.events, || kernel::read_counter(&bss.lost_events), &mut AcceptText::new(&args.output))
}

fn load<'obj>(
    backend: Backend,
    slot: &'obj mut MaybeUninit<OpenObject>,
    filters: &Filters,
    pinned: &PinnedSets,
) -> Result<(AcceptSkel<'obj>, Vec<Link>)> {
    let mut open = AcceptSkelBuilder::default().open(slot).context(|| "opening the BPF object".into())?;
    let rodata = open.maps.rodata_data.as_deref_mut().expect("the accept object has rodata");
    filters.write_rodata(rodata);
    rodata.kernel_hook = backend != Backend::Tracepoint;
    pinned.shape_holders(&mut open.maps.cgroup_set, &mut open.maps.mntns_set)?;

    let new_signature = backend == Backend::Fentry && kernel::has_btf_struct("proto_accept_arg");
    open.progs.fexit_inet_csk_accept.set_autoload(backend == Backend::Fentry && !new_signature);
    open.progs.fexit_inet_csk_accept_v610.set_autoload(new_signature);
    open.progs.kretprobe_inet_csk_accept.set_autoload(backend == Backend::Kprobe);
    let skel = open.load().context(|| format!("loading the {backend} programs"))?;
    pinned.fill_holders(&skel.maps.cgroup_set, &skel.maps.mntns_set)?;

    // Syscall exits first, the kernel hook second: an accept returning between the two is still seen once.
    let progs = &skel.progs;
    let mut links = vec![
        kernel::attach(&progs.tp_sys_exit_accept4, "tracepoint syscalls:sys_exit_accept4")?,
        kernel::attach(&progs.tp_sys_exit_accept, "tracepoint syscalls:sys_exit_accept")?,
    ];
    match backend {
        Backend::Fentry if new_signature => {
            links.push(kernel::attach(&progs.fexit_inet_csk_accept_v610, "fexit inet_csk_accept")?)
        }
        Backend::Fentry => links.push(kernel::attach(&progs.fexit_inet_csk_accept, "fexit inet_csk_accept")?),
        Backend::Kprobe => links.push(kernel::attach(&progs.kretprobe_inet_csk_accept, "kretprobe inet_csk_accept")?),
        Backend::Tracepoint => {}
    }
    Ok((skel, links))
}
