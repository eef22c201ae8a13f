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
use crate::format::{Format, Losses};
use crate::pods::PodDirs;
use crate::{kernel, preflight, ring};

/// The parts of a subcommand's object that differ from the others.
pub struct Plan {
    /// -P matches the remote port too (tracer: either end), not only the local one (accept).
    pub ports_either_end: bool,
    /// The subcommand's own programs by name, to attach before and after the accept hooks that every
    /// object has (ACCEPT_HOOKS); programs not loaded with the chosen backend and features are skipped.
    pub attach_first: &'static [&'static str],
    pub attach_last: &'static [&'static str],
    /// The owners map holds an entry per connection whatever the features (tracer); otherwise (accept) only
    /// with stats on, from each handshake to its accept.
    pub owners_always: bool,
}

/// accept.bpf.h's programs, in the order to attach them: the syscall entries (stats), the syscall exits
/// (and io_uring completions), then the kernel hook, so that an accept returning between two attachments is still seen once.
const ACCEPT_HOOKS: &[&str] = &[
    "tp_sys_enter_accept4",
    "tp_sys_enter_accept",
    "tp_sys_exit_accept4",
    "tp_sys_exit_accept",
    "tp_io_uring_submit_sqe",
    "tp_io_uring_task_add",
    "tp_io_uring_complete",
    "fexit_inet_csk_accept",
    "kretprobe_inet_csk_accept",
];

/// Kernel work beyond the subcommand's default, each off unless asked for: off, its programs are not
/// loaded and its branches are pruned by the verifier, so the default costs nothing more.
#[derive(Clone, Copy, Debug, Default)]
pub struct Features {
    /// Report failed connects (tracer --failed): the connect() syscall programs, SYN_SENT -> CLOSE.
    pub failed: bool,
    /// How, when and with how many bytes connections end (tracer -L, and every tracer JSON close).
    pub lifespan: bool,
    /// How good each connection was: handshake, accept queue, RTT and retransmits (-S, and all JSON).
    pub stats: bool,
    /// Records name cgroups (JSON, -C): the kernel reports each cgroup made, for those gone before printing.
    pub cgroups: bool,
    /// The most series the kernel counts (metrics: --max-series); 0 for objects that count none.
    pub series: u32,
}

/// A generated skeleton builder, with typed access to the things only its own types know: the rodata
/// (to write filters and features) and the .bss counters of what the kernel could not keep.
pub trait Tool: for<'obj> SkelBuilder<'obj> + Default {
    fn rodata<'a, 'obj>(open: &'a mut <Self as SkelBuilder<'obj>>::Output) -> &'a mut dyn FilterRodata;
    fn set_features<'obj>(open: &mut <Self as SkelBuilder<'obj>>::Output, features: Features);
    /// The .bss counters of what the kernel could not keep.
    fn losses<'a, 'obj>(loaded: &'a Loaded<'obj, Self>) -> LossCounters<'a>;
}

/// The kernel's counters of what it could not keep, in the loaded object's .bss.
pub struct LossCounters<'a> {
    /// Events that found the ring buffer full.
    pub events: &'a u64,
    /// Map updates the kernel refused, and the errno (negative) of the last one.
    pub unremembered: &'a u64,
    pub unremembered_error: &'a i64,
    /// Cgroup records that found the ring buffer full.
    pub cgroups: &'a u64,
    /// Series the kernel had no room for (metrics only).
    pub series_dropped: Option<&'a u64>,
}

pub type Loaded<'obj, T> = <<T as SkelBuilder<'obj>>::Output as OpenSkel<'obj>>::Output;

/// Runs a subcommand; `layout` makes its output once the object is loaded: JSON names the backend, metrics
/// reads the object's series map.
pub fn run<T: Tool, F: Format>(
    filter: &FilterArgs,
    run: &RunArgs,
    plan: &Plan,
    features: Features,
    layout: impl FnOnce(Backend, &Object) -> Result<F>,
) -> Result<()> {
    let filters = Filters::from_args(filter)?;
    preflight::check()?;
    let pinned = filters.open_pinned_maps()?;
    kernel::set_libbpf_log(run.debug);
    let uring = backend::uring_tracepoints();
    let mut slots = [const { MaybeUninit::uninit() }; 3];
    let (backend, (skel, _links, mut pods)) =
        backend::load_first(run.backend, &mut slots, run.debug, |backend, slot| {
            let programs = Programs { backend, features, uring, owners_always: plan.owners_always };
            load::<T>(slot, &programs, &filters, &pinned, plan, run.ring_size)
        })?;
    if backend == Backend::Tracepoint {
        if let Some(why) = uring.blind_spot() {
            eprintln!("tcpkit: {why}");
        }
    }
    let events = map(skel.object(), "events")?;
    let counters = T::losses(&skel);
    let limits = ring::Limits { count: run.count, duration: run.duration };
    let losses = || Losses {
        events: kernel::read_counter(counters.events),
        unremembered: kernel::read_counter(counters.unremembered),
        unremembered_error: kernel::read_signed(counters.unremembered_error),
        cgroups: kernel::read_counter(counters.cgroups),
        series_dropped: counters.series_dropped.map_or(0, kernel::read_counter),
    };
    let housekeeping = || pods.as_mut().map_or(Ok(()), PodDirs::refresh);
    let mut layout = layout(backend, skel.object())?;
    ring::run(&events, losses, housekeeping, &mut layout, limits)
}

/// What decides which of an object's programs load: the backend, the features, the io_uring tracepoints.
struct Programs {
    backend: Backend,
    features: Features,
    uring: backend::UringTracepoints,
    owners_always: bool,
}

fn load<'obj, T: Tool>(
    slot: &'obj mut MaybeUninit<OpenObject>,
    programs: &Programs,
    filters: &Filters,
    pinned: &PinnedSets,
    plan: &Plan,
    ring_size: u32,
) -> Result<(Loaded<'obj, T>, Vec<Link>, Option<PodDirs>)> {
    let mut open = T::default().open(slot).context(|| "opening the BPF object".into())?;
    if let Some(mut events) = open.open_object_mut().maps_mut().find(|m| m.name() == "events") {
        events.set_max_entries(ring_size).context(|| "sizing the ring buffer".into())?;
    }
    let backend = programs.backend;
    let kernel_hook = select_programs(programs, open.open_object_mut());
    T::set_features(&mut open, programs.features);
    let rodata = T::rodata(&mut open);
    filters.write_rodata(rodata, plan.ports_either_end);
    *rodata.filters_mut().kernel_hook = kernel_hook;
    *rodata.filters_mut().wakeup_bytes = u64::from(ring_size / 4);
    pinned.shape_holders(open.open_object_mut())?;
    let skel = open.load().context(|| format!("loading the {backend} programs"))?;
    let object = skel.object();
    let cgroup_dir = map(object, "cgroup_dir")?;
    pinned.fill_holders(&map(object, "cgroup_set")?, &map(object, "mntns_set")?, &cgroup_dir)?;
    let pods = filters.pods.as_ref().map(|p| PodDirs::install(p, &cgroup_dir)).transpose()?;
    // Cgroups first: a cgroup's record must be in the ring before any event of a task in it.
    let order =
        ["cgroup_made", "cgroup_removed"].iter().chain(plan.attach_first).chain(ACCEPT_HOOKS).chain(plan.attach_last);
    let links = attach(skel.object(), order)?;
    Ok((skel, links, pods))
}

/// Loads the accept hook of the backend (fexit or the kretprobe; the syscall-exit programs always load;
/// with tracepoints only, the io_uring ones the kernel has), and the programs of the features asked for.
/// Returns whether a kernel hook loads, for the `kernel_hook` rodata.
fn select_programs(programs: &Programs, object: &mut OpenObject) -> bool {
    let Programs { backend, features, uring, owners_always } = *programs;
    let tracepoints_only = backend == Backend::Tracepoint;
    for mut prog in object.progs_mut() {
        let load = match prog.name().to_str() {
            Some("fexit_inet_csk_accept") => backend == Backend::Fentry,
            Some("kretprobe_inet_csk_accept") => backend == Backend::Kprobe,
            Some("tp_io_uring_complete") => tracepoints_only && uring.complete,
            Some("tp_io_uring_submit_sqe") => tracepoints_only && uring.submit_needed && uring.submit,
            Some("tp_io_uring_task_add") => tracepoints_only && uring.submit_needed && uring.task_add,
            Some("tp_sys_enter_connect" | "tp_sys_exit_connect") => features.failed,
            Some("cgroup_made" | "cgroup_removed") => features.cgroups,
            Some(
                "tp_sys_enter_accept4" | "tp_sys_enter_accept" | "inet_sock_set_state_handshake" | "nested_handshake",
            ) => features.stats,
            _ => continue,
        };
        prog.set_autoload(load);
    }
    // A map that no loaded program uses still takes kernel memory: keep it at one entry.
    for mut map in object.maps_mut() {
        let unused = match map.name().to_str() {
            Some("connect_calls") => !features.failed,
            Some("uring_accepts") => !(tracepoints_only && uring.submit_needed),
            Some("owners") => !(owners_always || features.stats),
            Some("series") => {
                let _ = map.set_max_entries(features.series.max(1));
                continue;
            }
            _ => continue,
        };
        if unused {
            let _ = map.set_max_entries(1);
        }
    }
    !tracepoints_only
}

fn attach<'a>(object: &Object, order: impl Iterator<Item = &'a &'static str>) -> Result<Vec<Link>> {
    let mut links = Vec::new();
    for name in order {
        let prog = object
            .progs_mut()
            .find(|p| p.name() == *name)
            .ok_or_else(|| Error::runtime(format!("the BPF object has no program {name}")))?;
        if prog.autoload() {
            links.push(prog.attach().context(|| format!("attaching {name}")).map_err(name_enotsupp)?);
        }
    }
    Ok(links)
}

/// The kernel's ENOTSUPP (524) is not a libc errno, so it reads "Unknown error 524"; an attach gets it where
/// the kernel has no way to run that kind of program there (an fexit program on arm64 before ftrace direct
/// calls: its trampolines cannot be called from kernel functions).
fn name_enotsupp(err: Error) -> Error {
    match err {
        Error::Runtime(msg) if msg.contains("Unknown error 524") => Error::Runtime(
            msg.replace("Unknown error 524", "ENOTSUPP, this kernel cannot attach such a program to this function"),
        ),
        other => other,
    }
}

pub fn map<'a>(object: &'a Object, name: &str) -> Result<Map<'a>> {
    object.maps().find(|m| m.name() == name).ok_or_else(|| Error::runtime(format!("the BPF object has no map {name}")))
}
