//! Turns filter flags into what the BPF programs read: rodata scalars and bitmaps set before load, and the
//! user's pinned maps swapped in for the placeholder maps.
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd};
use std::path::{Path, PathBuf};

use libbpf_rs::{Map, MapCore, MapFlags, MapHandle, MapType, OpenObject};

use crate::cli::FilterArgs;
use crate::error::{Context, Error, Result};
use crate::pods::PodFilter;
use crate::ports::PortSet;

const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;

/// Validated filters, ready to be written into any tcpkit skeleton.
#[derive(Debug, Default)]
pub struct Filters {
    pub pid: Option<u32>,
    pub uid: Option<u32>,
    pub cgroup_dir: Option<PathBuf>,
    pub pods: Option<PodFilter>,
    pub netns: Option<u32>,
    pub family: Option<u16>,
    pub ports: Option<PortSet>,
    pub cgroupmap: Option<PathBuf>,
    pub mntnsmap: Option<PathBuf>,
}

impl Filters {
    pub fn from_args(args: &FilterArgs) -> Result<Self> {
        if let Some(pid) = args.pid {
            if !Path::new(&format!("/proc/{pid}")).exists() {
                return Err(Error::usage(format!("no process has PID {pid}")));
            }
        }
        if let Some(dir) = &args.cgroup {
            check_cgroup_dir(dir)?;
        }
        if !args.host_root.is_dir() {
            let root = args.host_root.display();
            return Err(Error::usage(format!(
                "--host-root {root}: not a directory (where the node's /var and /run are)"
            )));
        }
        // A container is the cgroup directory its runtime made: --container is --cgroup with that directory.
        let cgroup_dir = match &args.container {
            Some(id) => Some(crate::identity::container_dir(id, &args.host_root).map_err(Error::usage)?),
            None => args.cgroup.clone(),
        };
        let pods = PodFilter::from_args(args.namespace.as_deref(), args.pod.as_deref(), &args.host_root)?;
        let family = match (args.ipv4, args.ipv6) {
            (true, false) => Some(AF_INET),
            (false, true) => Some(AF_INET6),
            _ => None,
        };
        Ok(Filters {
            pid: args.pid,
            uid: args.uid,
            cgroup_dir,
            pods,
            netns: args.netns,
            family,
            ports: args.ports.clone(),
            cgroupmap: args.cgroupmap.clone(),
            mntnsmap: args.mntnsmap.clone(),
        })
    }

    /// `ports_either_end`: -P matches the remote port too (tracer), not only the local one (accept).
    pub fn write_rodata(&self, ro: &mut dyn FilterRodata, ports_either_end: bool) {
        let f = ro.filters_mut();
        *f.ports_either_end = ports_either_end;
        *f.tgid = self.pid.unwrap_or(0);
        *f.filter_uid = self.uid.is_some();
        *f.uid = self.uid.unwrap_or(0);
        *f.cgroup_dirs = match (&self.cgroup_dir, &self.pods) {
            (Some(_), _) => 1,
            (None, Some(_)) => crate::pods::SLOTS as u32,
            (None, None) => 0,
        };
        *f.netns = self.netns.unwrap_or(0);
        *f.family = self.family.unwrap_or(0);
        *f.filter_cgroup = self.cgroupmap.is_some();
        *f.filter_mntns = self.mntnsmap.is_some();
        *f.filter_ports = self.ports.is_some();
        if let Some(ports) = &self.ports {
            f.ports.copy_from_slice(ports.bitmap());
        }
    }

    /// Opens and checks the user's pinned maps and cgroup directory, before anything is loaded.
    pub fn open_pinned_maps(&self) -> Result<PinnedSets> {
        let cgroup_dir = match &self.cgroup_dir {
            Some(dir) => Some(File::open(dir).map_err(|e| Error::usage(format!("--cgroup {}: {e}", dir.display())))?),
            None => None,
        };
        Ok(PinnedSets {
            cgroup_dir,
            cgroup: self.cgroupmap.as_deref().map(|p| open_pinned(p, "--cgroupmap", "cgroup id")).transpose()?,
            mntns: self
                .mntnsmap
                .as_deref()
                .map(|p| open_pinned(p, "--mntnsmap", "mount namespace inode"))
                .transpose()?,
        })
    }
}

/// The user's pinned maps, open; each goes into slot 0 of its array-of-maps holder. And the --cgroup
/// directory, open, for slot 0 of the cgroup array.
pub struct PinnedSets {
    cgroup_dir: Option<File>,
    cgroup: Option<MapHandle>,
    mntns: Option<MapHandle>,
}

impl PinnedSets {
    /// Before load: the holders' inner-map template becomes the user's map, so the kernel accepts it.
    pub fn shape_holders(&self, object: &mut OpenObject) -> Result<()> {
        for mut holder in object.maps_mut() {
            let map = match holder.name().to_str() {
                Some("cgroup_set") => &self.cgroup,
                Some("mntns_set") => &self.mntns,
                _ => continue,
            };
            if let Some(map) = map {
                holder.set_inner_map_fd(map.as_fd()).context(|| "preparing a pinned map filter".into())?;
            }
        }
        Ok(())
    }

    /// After load: puts the user's maps into their holders, and the cgroup directory into its array.
    pub fn fill_holders(&self, cgroup_set: &Map, mntns_set: &Map, cgroup_dir: &Map) -> Result<()> {
        if let Some(dir) = &self.cgroup_dir {
            let fd = dir.as_raw_fd() as u32;
            cgroup_dir
                .update(&0u32.to_ne_bytes(), &fd.to_ne_bytes(), MapFlags::ANY)
                .context(|| "installing the --cgroup filter".into())?;
        }
        for (map, holder) in [(&self.cgroup, cgroup_set), (&self.mntns, mntns_set)] {
            if let Some(map) = map {
                let fd = map.as_fd().as_raw_fd() as u32;
                holder
                    .update(&0u32.to_ne_bytes(), &fd.to_ne_bytes(), MapFlags::ANY)
                    .context(|| "installing a pinned map filter".into())?;
            }
        }
        Ok(())
    }
}

/// --cgroup takes a directory of the cgroup v2 hierarchy (the one BPF's cgroup helpers see).
fn check_cgroup_dir(dir: &Path) -> Result<()> {
    let shown = dir.display();
    let cgroup2 = crate::identity::on_cgroup2(dir).map_err(|e| Error::usage(format!("--cgroup {shown}: {e}")))?;
    if !cgroup2 || !dir.is_dir() {
        return Err(Error::usage(format!(
            "--cgroup {shown}: not a cgroup v2 directory (they live under the cgroup2 mount, e.g. /sys/fs/cgroup)"
        )));
    }
    Ok(())
}

fn open_pinned(path: &Path, flag: &str, key: &str) -> Result<MapHandle> {
    let shown = path.display();
    let handle = MapHandle::from_pinned_path(path).map_err(|e| {
        let why = match e.kind() {
            libbpf_rs::ErrorKind::NotFound => "no such pinned map".to_string(),
            _ => format!("not a pinned BPF map ({e})"),
        };
        Error::runtime(format!("{flag} {shown}: {why}; pin a hash map keyed by the {key} (u64) there"))
    })?;
    if !matches!(handle.map_type(), MapType::Hash | MapType::LruHash) {
        return Err(Error::runtime(format!(
            "{flag} {shown}: the map is a {:?}, not a hash map keyed by the {key}",
            handle.map_type()
        )));
    }
    if handle.key_size() != 8 {
        return Err(Error::runtime(format!(
            "{flag} {shown}: keys are {} bytes; the {key} key must be 8 bytes (u64)",
            handle.key_size()
        )));
    }
    Ok(handle)
}

/// The filter fields of a skeleton's rodata (and accept.bpf.h's kernel_hook, the ring's wake-up
/// threshold), borrowed together.
pub struct RodataFilters<'a> {
    pub kernel_hook: &'a mut bool,
    pub wakeup_bytes: &'a mut u64,
    pub tgid: &'a mut u32,
    pub filter_uid: &'a mut bool,
    pub uid: &'a mut u32,
    pub cgroup_dirs: &'a mut u32,
    pub netns: &'a mut u32,
    pub family: &'a mut u16,
    pub filter_ports: &'a mut bool,
    pub ports_either_end: &'a mut bool,
    pub filter_cgroup: &'a mut bool,
    pub filter_mntns: &'a mut bool,
    pub ports: &'a mut [u64; crate::ports::BITMAP_WORDS],
}

/// Every object includes filter.bpf.h and accept.bpf.h, so every generated rodata type has these fields.
pub trait FilterRodata {
    fn filters_mut(&mut self) -> RodataFilters<'_>;
}

#[macro_export]
macro_rules! impl_filter_rodata {
    ($rodata:ty) => {
        impl $crate::filter::FilterRodata for $rodata {
            fn filters_mut(&mut self) -> $crate::filter::RodataFilters<'_> {
                $crate::filter::RodataFilters {
                    kernel_hook: &mut self.kernel_hook,
                    wakeup_bytes: &mut self.wakeup_bytes,
                    tgid: &mut self.targ_tgid,
                    filter_uid: &mut self.filter_uid,
                    uid: &mut self.targ_uid,
                    cgroup_dirs: &mut self.cgroup_dirs,
                    netns: &mut self.targ_netns,
                    family: &mut self.targ_family,
                    filter_ports: &mut self.filter_ports,
                    ports_either_end: &mut self.ports_either_end,
                    filter_cgroup: &mut self.filter_cgroup,
                    filter_mntns: &mut self.filter_mntns,
                    ports: &mut self.targ_ports,
                }
            }
        }
    };
}
