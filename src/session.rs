//! What every subcommand does, in one place: check the machine, pick a backend, open, configure, load and
//! attach its BPF object, then read events until told to stop. Every tcpkit object includes filter.bpf.h
//! and accept.bpf.h, so every skeleton has the same filter rodata, maps and accept programs; a subcommand
//! supplies only its skeleton, what -P matches, its attach order and its layout.
use std::mem::MaybeUninit;

use libbpf_rs::skel::{OpenSkel, Skel, SkelBuilder};
use libbpf_rs::{Link, Map, MapCore, Object, OpenObject};

use crate::backend::{self, Backend};
use crate::cli::{FilterArgs, RunArgs};
use crate::error::{Context, Error, Result};
use crate::filter::{FilterRodata, Filters, PinnedSets};
use crate::format::Format;
use crate::{kernel, preflight, ring};

/// The parts of a subcommand's object that differ from the others.
pub struct Plan {
    /// -P matches the remote port too (tracer: either end), not only the local one (accept).
    pub ports_either_end: bool,
    /// Programs by name, in the order to attach them; those not loaded with the chosen backend are skipped.
    pub attach_order: &'static [&'static str],
}

/// A generated skeleton builder, with typed access to the two things only its own types know: the
/// rodata (to write filters) and the .bss counter of events lost on a full ring.
pub trait Tool: for<'obj> SkelBuilder<'obj> + Default {
    fn rodata<'a, 'obj>(open: &'a mut <Self as SkelBuilder<'obj>>::Output) -> &'a mut dyn FilterRodata;
    fn lost_events<'a, 'obj>(loaded: &'a Loaded<'obj, Self>) -> &'a u64;
}

pub type Loaded<'obj, T> = <<T as SkelBuilder<'obj>>::Output as OpenSkel<'obj>>::Output;

/// Runs a subcommand; `layout` makes its output format once the backend is known (JSON names it).
pub fn run<T: Tool, F: Format>(
    filter: &FilterArgs,
    run: &RunArgs,
    plan: &Plan,
    layout: impl FnOnce(Backend) -> F,
) -> Result<()> {
    let filters = Filters::from_args(filter)?;
    preflight::check()?;
    let pinned = filters.open_pinned_maps()?;
    kernel::set_libbpf_log(run.debug);
    let mut slots = [const { MaybeUninit::uninit() }; 3];
    let (backend, (skel, _links)) = backend::load_first(run.backend, &mut slots, run.debug, |backend, slot| {
        load::<T>(backend, slot, &filters, &pinned, plan, run.ring_size)
    })?;
    let events = map(skel.object(), "events")?;
    let lost = T::lost_events(&skel);
    let limits = ring::Limits { count: run.count, duration: run.duration };
    ring::run(&events, || kernel::read_counter(lost), &mut layout(backend), limits)
}

fn load<'obj, T: Tool>(
    backend: Backend,
    slot: &'obj mut MaybeUninit<OpenObject>,
    filters: &Filters,
    pinned: &PinnedSets,
    plan: &Plan,
    ring_size: u32,
) -> Result<(Loaded<'obj, T>, Vec<Link>)> {
    let mut open = T::default().open(slot).context(|| "opening the BPF object".into())?;
    if let Some(mut events) = open.open_object_mut().maps_mut().find(|m| m.name() == "events") {
        events.set_max_entries(ring_size).context(|| "sizing the ring buffer".into())?;
    }
    let kernel_hook = select_accept_hook(backend, open.open_object_mut());
    let rodata = T::rodata(&mut open);
    filters.write_rodata(rodata, plan.ports_either_end);
    *rodata.filters_mut().kernel_hook = kernel_hook;
    *rodata.filters_mut().wakeup_bytes = u64::from(ring_size / 4);
    pinned.shape_holders(open.open_object_mut())?;
    let skel = open.load().context(|| format!("loading the {backend} programs"))?;
    let object = skel.object();
    pinned.fill_holders(&map(object, "cgroup_set")?, &map(object, "mntns_set")?, &map(object, "cgroup_dir")?)?;
    let links = attach(skel.object(), plan.attach_order)?;
    Ok((skel, links))
}

/// Loads the accept hook of `backend` (fexit or the kretprobe); the syscall-exit programs always load.
/// Returns whether a kernel hook loads, for the `kernel_hook` rodata.
fn select_accept_hook(backend: Backend, object: &mut OpenObject) -> bool {
    for mut prog in object.progs_mut() {
        let load = match prog.name().to_str() {
            Some("fexit_inet_csk_accept") => backend == Backend::Fentry,
            Some("kretprobe_inet_csk_accept") => backend == Backend::Kprobe,
            _ => continue,
        };
        prog.set_autoload(load);
    }
    backend != Backend::Tracepoint
}

fn attach(object: &Object, order: &[&str]) -> Result<Vec<Link>> {
    let mut links = Vec::new();
    for name in order {
        let prog = object
            .progs_mut()
            .find(|p| p.name() == *name)
            .ok_or_else(|| Error::runtime(format!("the BPF object has no program {name}")))?;
        if prog.autoload() {
            links.push(prog.attach().context(|| format!("attaching {name}"))?);
        }
    }
    Ok(links)
}

fn map<'a>(object: &'a Object, name: &str) -> Result<Map<'a>> {
    object.maps().find(|m| m.name() == name).ok_or_else(|| Error::runtime(format!("the BPF object has no map {name}")))
}
