//! --pod and --namespace: the cgroup directories of the Kubernetes pods they name, in the kernel's
//! cgroup_dir slots (filter.bpf.h), kept as pods come and go: a pod recreated under its name (a
//! StatefulSet's) has a new UID and a new directory, and a namespace gains and loses pods. Which pods
//! exist, and their names, come from kubelet's pod log directories under --host-root (names.rs); their
//! directories from the cgroup tree (identity.rs). Nothing here runs per event.
use std::collections::HashMap;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use libbpf_rs::{Map, MapCore, MapFlags, MapHandle};

use crate::error::{Context, Error, Result};
use crate::names::{is_dns_name, NameFiles};

/// How often the pods are looked for again: a new pod's first connections wait at most this long.
const REFRESH: Duration = Duration::from_secs(1);
/// The kernel's slots (CGROUP_DIRS in filter.bpf.h).
pub const SLOTS: usize = 128;

/// The pods asked for: by name (and namespace), or every pod of a namespace.
#[derive(Debug, Clone)]
pub struct PodFilter {
    namespace: Option<String>,
    pod: Option<String>,
    host_root: PathBuf,
}

impl PodFilter {
    /// Checks the names and that they name pods on this node now, each with a cgroup; a one-line usage
    /// error otherwise.
    pub fn from_args(namespace: Option<&str>, pod: Option<&str>, host_root: &Path) -> Result<Option<PodFilter>> {
        if namespace.is_none() && pod.is_none() {
            return Ok(None);
        }
        for (flag, name) in [("--namespace", namespace), ("--pod", pod)] {
            if let Some(name) = name.filter(|n| !is_dns_name(n)) {
                return Err(Error::usage(format!(
                    "{flag} {name}: not a Kubernetes name (lowercase letters, digits, - and ., at most 253)"
                )));
            }
        }
        let filter = PodFilter {
            namespace: namespace.map(str::to_string),
            pod: pod.map(str::to_string),
            host_root: host_root.to_path_buf(),
        };
        let pods = NameFiles::new(host_root).pods_matching(namespace, pod);
        let asked = filter.asked();
        let logs = host_root.join("var/log/pods");
        if pods.is_empty() {
            return Err(Error::usage(format!("{asked}: no such pod on this node (kubelet's {})", logs.display())));
        }
        let mut namespaces: Vec<&str> = pods.iter().map(|(_, ns, _)| ns.as_str()).collect();
        namespaces.sort();
        namespaces.dedup();
        if pod.is_some() && namespace.is_none() && namespaces.len() > 1 {
            return Err(Error::usage(format!(
                "{asked}: pods of that name in namespaces {}; add --namespace",
                namespaces.join(", ")
            )));
        }
        let uids: Vec<&str> = pods.iter().map(|(uid, _, _)| uid.as_str()).collect();
        if crate::identity::pod_dirs(&uids).is_empty() {
            return Err(Error::usage(format!("{asked}: no cgroup of such a pod exists now")));
        }
        Ok(Some(filter))
    }

    /// The flags as given, for messages.
    fn asked(&self) -> String {
        let ns = self.namespace.as_deref().map(|n| format!("--namespace {n}"));
        let pod = self.pod.as_deref().map(|p| format!("--pod {p}"));
        [pod, ns].into_iter().flatten().collect::<Vec<_>>().join(" ")
    }
}

/// The pods' directories as the kernel holds them: slot i is `slots[i]`, with no empty slot before the
/// last, as in_cgroup_dirs() reads them.
pub struct PodDirs {
    filter: PodFilter,
    files: NameFiles,
    map: MapHandle,
    slots: Vec<(PathBuf, File)>,
    /// The UIDs last found, and whether each had a directory: the tree is walked again only when they change.
    known: Vec<(String, bool)>,
    checked: Option<Instant>,
    warned_full: bool,
}

impl PodDirs {
    /// Fills the kernel's slots with the pods' directories now (before the programs are attached).
    pub fn install(filter: &PodFilter, map: &Map) -> Result<PodDirs> {
        let map = MapHandle::try_from(map).context(|| "opening the cgroup directory map".into())?;
        let files = NameFiles::new(&filter.host_root);
        let mut dirs = PodDirs {
            filter: filter.clone(),
            files,
            map,
            slots: Vec::new(),
            known: Vec::new(),
            checked: None,
            warned_full: false,
        };
        dirs.refresh()?;
        Ok(dirs)
    }

    /// Looks for the pods again, at most once per REFRESH, and updates the kernel's slots if they changed.
    pub fn refresh(&mut self) -> Result<()> {
        if self.checked.is_some_and(|t| t.elapsed() < REFRESH) {
            return Ok(());
        }
        self.checked = Some(Instant::now());
        let pods = self.files.pods_matching(self.filter.namespace.as_deref(), self.filter.pod.as_deref());
        let uids: Vec<&str> = pods.iter().map(|(uid, _, _)| uid.as_str()).collect();
        let same = self.known.len() == uids.len()
            && self.known.iter().zip(&uids).all(|((known, found), uid)| known == uid && *found);
        if same {
            return Ok(());
        }
        let dirs = crate::identity::pod_dirs(&uids);
        self.known = uids.iter().map(|uid| (uid.to_string(), dirs.contains_key(*uid))).collect();
        self.set(dirs)
    }

    /// Makes the slots hold exactly `wanted`'s directories. A pod that stays keeps its slot; a slot freed
    /// gets the last slot's directory before the last is emptied, so no pod that stays is ever out of the set.
    fn set(&mut self, wanted: HashMap<String, PathBuf>) -> Result<()> {
        let mut i = 0;
        while i < self.slots.len() {
            if wanted.values().any(|dir| *dir == self.slots[i].0) {
                i += 1;
                continue;
            }
            let last = self.slots.len() - 1;
            if i != last {
                self.write(i, &self.slots[last].1)?;
            }
            self.map.delete(&(last as u32).to_ne_bytes()).context(|| "updating the --pod filter".into())?;
            self.slots.swap_remove(i);
        }
        let mut new: Vec<&PathBuf> = wanted.values().filter(|dir| !self.slots.iter().any(|(d, _)| d == *dir)).collect();
        new.sort();
        for dir in new {
            if self.slots.len() == SLOTS {
                if !self.warned_full {
                    eprintln!(
                        "tcpkit: warning: {}: more than {SLOTS} pods; the others are left out",
                        self.filter.asked()
                    );
                    self.warned_full = true;
                }
                break;
            }
            let Ok(file) = File::open(dir) else { continue }; // removed since the walk
            self.write(self.slots.len(), &file)?;
            self.slots.push((dir.clone(), file));
        }
        Ok(())
    }

    fn write(&self, slot: usize, dir: &File) -> Result<()> {
        let fd = dir.as_raw_fd() as u32;
        self.map
            .update(&(slot as u32).to_ne_bytes(), &fd.to_ne_bytes(), MapFlags::ANY)
            .context(|| "updating the --pod filter".into())
    }
}
