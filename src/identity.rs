//! Who a task is, from its cgroup v2 id alone: the cgroup's path, and what container runtimes, kubelet and
//! systemd write into it (container id and runtime, pod UID, systemd unit). No container runtime is asked:
//! the path says it all. Ids resolve through a cache; a miss opens the cgroup by its id (one syscall), or,
//! where that is not allowed, walks the cgroup tree at most once per RESCAN_INTERVAL, so a burst of new
//! cgroups costs one walk. A hit allocates nothing. A container's names (pod, namespace, its own) come from
//! the node's files (names.rs), read when its cgroup is first seen, again each second while they are
//! missing (a new container's files may come after its first connection), and every few seconds for a
//! docker or podman container (a rename).
use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::libc;

use crate::names::{is_container_id, is_pod_uid, NameFiles, Names};

/// The longest a new cgroup can wait to be named (events in it show their id alone until then).
const RESCAN_INTERVAL: Duration = Duration::from_secs(1);
const CGROUP2_SUPER_MAGIC: i64 = 0x63677270;
/// How often a container without names looks for them again.
const NAMES_RETRY: Duration = Duration::from_secs(1);
/// How often a docker or podman container's name is read again (a rename); Kubernetes names never change.
const NAMES_REFRESH: Duration = Duration::from_secs(5);
/// How long a removed cgroup stays known: a close that waited for its connection's end (FIN_WAIT2 lasts
/// up to tcp_fin_timeout, 60 s by default) can name a cgroup removed before it.
const FORGET_AFTER: Duration = Duration::from_secs(180);

/// What a cgroup's path says about the tasks in it.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Identity {
    /// The path below the cgroup v2 root, from `/`.
    pub cgroup: String,
    /// 64 hex digits.
    pub container_id: Option<String>,
    /// docker, containerd, cri-o or podman, when the layout names it.
    pub container_runtime: Option<&'static str>,
    /// The Kubernetes pod's UID, with dashes.
    pub pod_uid: Option<String>,
    /// The systemd unit the task is in (`nginx.service`, `session-3.scope`).
    pub unit: Option<String>,
    /// The container's names, from the node's files.
    pub names: Names,
    /// `names` as the -C column shows them.
    label: Option<String>,
    names_read: Option<Instant>,
}

impl Identity {
    pub fn from_path(cgroup: &str) -> Identity {
        let mut id = Identity { cgroup: cgroup.to_string(), ..Default::default() };
        let parts: Vec<&str> = cgroup.split('/').filter(|p| !p.is_empty()).collect();
        for (i, part) in parts.iter().enumerate() {
            if let Some((runtime, container)) = container_of(part, parts.get(i.wrapping_sub(1)).copied()) {
                id.container_id = Some(container.to_string());
                id.container_runtime = runtime;
            }
            if let Some(uid) = pod_of(part, i > 0 && parts[..i].iter().any(|p| p.starts_with("kubepods"))) {
                id.pod_uid = Some(uid);
            }
            if (part.ends_with(".service") || part.ends_with(".scope")) && !part.contains("conmon") {
                id.unit = Some(part.to_string());
            }
        }
        id
    }
}

impl Identity {
    /// Whether the names are to be read (again) now.
    fn names_due(&self) -> bool {
        if self.container_id.is_none() {
            return false;
        }
        // Until the container's own name is known (a pod's directory can come before its symlink), look again
        // each second; then Kubernetes names never change, docker's and podman's can (a rename).
        let named = self.names.container.is_some() || self.names.sandbox;
        let every = match (named, &self.pod_uid) {
            (false, _) => NAMES_RETRY,
            (true, Some(_)) => return false,
            (true, None) => NAMES_REFRESH,
        };
        self.names_read.is_none_or(|t| t.elapsed() >= every)
    }

    fn read_names(&mut self, files: &mut NameFiles) {
        let Some(id) = &self.container_id else { return };
        let names = files.names(id, self.container_runtime, self.pod_uid.as_deref());
        // A container that is gone takes its files with it (containerd deletes the bundle at exit, docker
        // and podman theirs at removal): the names it had stay, for the closes of its last connections.
        let gone = names.label().is_none() && self.names.label().is_some();
        if names != self.names && !gone {
            self.label = names.label();
            self.names = names;
        }
        self.names_read = Some(Instant::now());
    }
}

/// A cgroup directory name that holds a container: its runtime (None where the layout does not say) and id.
fn container_of<'a>(part: &'a str, parent: Option<&str>) -> Option<(Option<&'static str>, &'a str)> {
    const SCOPES: [(&str, &str); 4] =
        [("docker-", "docker"), ("cri-containerd-", "containerd"), ("crio-", "cri-o"), ("libpod-", "podman")];
    if let Some(id) = part.strip_suffix(".scope") {
        for (prefix, runtime) in SCOPES {
            if let Some(id) = id.strip_prefix(prefix).filter(|id| is_container_id(id)) {
                return Some((Some(runtime), id));
            }
        }
    }
    // containerd's systemd driver without scopes: kubepods-...-pod<uid>.slice:cri-containerd:<id>
    if let Some((_, id)) = part.split_once(":cri-containerd:").filter(|(_, id)| is_container_id(id)) {
        return Some((Some("containerd"), id));
    }
    // podman --cgroups=split, as quadlet runs containers: <unit>.service/libpod-payload-<id>.
    if let Some(id) = part.strip_prefix("libpod-payload-").filter(|id| is_container_id(id)) {
        return Some((Some("podman"), id));
    }
    // cgroupfs drivers: docker/<id>, libpod_parent/libpod-<id>, kubepods/<qos>/pod<uid>/<id>.
    match parent {
        Some("docker") if is_container_id(part) => Some((Some("docker"), part)),
        Some("libpod_parent") => {
            part.strip_prefix("libpod-").filter(|id| is_container_id(id)).map(|id| (Some("podman"), id))
        }
        Some(p) if p.starts_with("pod") && is_container_id(part) => Some((None, part)),
        _ => None,
    }
}

/// The pod UID in a kubelet cgroup name: `kubepods-<qos>-pod<uid>.slice` (systemd driver, `_` for `-`) or
/// `pod<uid>` below kubepods (cgroupfs driver).
fn pod_of(part: &str, below_kubepods: bool) -> Option<String> {
    let part = part.split(':').next().unwrap_or(part); // before containerd's ":cri-containerd:<id>"
    let uid = if let Some(slice) = part.strip_suffix(".slice").filter(|s| s.starts_with("kubepods")) {
        slice.rsplit_once("-pod")?.1.replace('_', "-")
    } else {
        part.strip_prefix("pod").filter(|_| below_kubepods)?.to_string()
    };
    is_pod_uid(&uid).then_some(uid)
}

/// Cgroup id -> identity, for the ids events carry.
pub struct CgroupCache {
    root: Option<PathBuf>,
    files: NameFiles,
    /// The root directory, open: the mount that cgroup ids are file handles of. None when opening a cgroup
    /// by its id is not possible here (no CAP_DAC_READ_SEARCH, as in the DaemonSet): then tcpkit walks.
    by_id: Option<File>,
    known: HashMap<u64, Option<Identity>>,
    last_scan: Option<Instant>,
    /// Removed cgroups, oldest first, to forget FORGET_AFTER their removal.
    removed: VecDeque<(Instant, u64)>,
    forget_after: Duration,
}

/// What opening a cgroup by its id found.
enum ById {
    Path(String),
    /// The kernel no longer has that cgroup.
    Gone,
    /// This process cannot open cgroups by id; walk the tree instead.
    Unsupported,
}

impl CgroupCache {
    /// `host_root`: where the node's /var/log, /run and /var/lib are (--host-root).
    pub fn new(host_root: &Path) -> CgroupCache {
        let root = cgroup2_root();
        let by_id = root.as_deref().and_then(|r| File::open(r).ok());
        CgroupCache {
            root,
            files: NameFiles::new(host_root),
            by_id,
            known: HashMap::new(),
            last_scan: None,
            removed: VecDeque::new(),
            forget_after: FORGET_AFTER,
        }
    }

    /// The identity of a cgroup id; None for 0 (no task), and for a cgroup not found (it vanished before
    /// tcpkit saw it, or, without open by id, it is newer than the last walk).
    pub fn lookup(&mut self, id: u64) -> Option<&Identity> {
        if id == 0 {
            return None;
        }
        if !self.known.contains_key(&id) {
            match self.open_by_id(id) {
                ById::Path(path) => {
                    self.known.insert(id, Some(Identity::from_path(&path)));
                }
                ById::Gone => {
                    self.known.insert(id, None);
                }
                ById::Unsupported => {
                    if self.last_scan.is_some_and(|t| t.elapsed() < RESCAN_INTERVAL) {
                        return None; // looked for again at the next walk
                    }
                    self.rescan();
                    // Not in the tree now: it vanished before tcpkit saw it. Its events show the id alone.
                    self.known.entry(id).or_insert(None);
                }
            }
        }
        let identity = self.known.get_mut(&id)?.as_mut()?;
        if identity.names_due() {
            identity.read_names(&mut self.files);
        }
        Some(identity)
    }

    /// A cgroup the kernel saw made (a cgroup record): known from now on, until FORGET_AFTER its removal.
    pub fn learn(&mut self, id: u64, path: &str) {
        self.forget_old();
        self.known.insert(id, Some(Identity::from_path(path)));
    }

    /// A cgroup the kernel saw removed: forgotten FORGET_AFTER from now, when the next cgroup is made or
    /// removed (what grows the cache is what prunes it; lookups stay free of it).
    pub fn removed(&mut self, id: u64) {
        self.forget_old();
        self.removed.push_back((Instant::now(), id));
    }

    fn forget_old(&mut self) {
        while let Some(&(at, id)) = self.removed.front() {
            if at.elapsed() < self.forget_after {
                break;
            }
            self.known.remove(&id);
            self.removed.pop_front();
        }
    }

    /// One cgroup, by its id: on cgroup2 the id is the directory's file handle (kernfs's), so
    /// open_by_handle_at opens it and /proc/self/fd names it, in a few microseconds instead of a walk.
    fn open_by_id(&mut self, id: u64) -> ById {
        const FILEID_KERNFS: i32 = 0xfe;
        #[repr(C)]
        struct KernfsHandle {
            handle_bytes: u32,
            handle_type: i32,
            id: u64,
        }
        let (Some(root), Some(mount)) = (&self.root, &self.by_id) else { return ById::Unsupported };
        let mut handle = KernfsHandle { handle_bytes: 8, handle_type: FILEID_KERNFS, id };
        let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC;
        // SAFETY: the handle is a struct file_handle whose f_handle holds handle_bytes (8) bytes, as the
        // kernel reads it; the call only reads it. The fd returned is owned by the File below.
        let fd = unsafe { libc::open_by_handle_at(mount.as_raw_fd(), (&raw mut handle).cast(), flags) };
        if fd < 0 {
            return match nix::errno::Errno::last() {
                nix::errno::Errno::ESTALE | nix::errno::Errno::ENOENT => ById::Gone,
                _ => {
                    self.by_id = None; // EPERM without CAP_DAC_READ_SEARCH, or no support: do not ask again
                    ById::Unsupported
                }
            };
        }
        // SAFETY: fd was just returned by the kernel and nothing else owns it.
        let dir = unsafe { File::from_raw_fd(fd) };
        let Ok(target) = std::fs::read_link(format!("/proc/self/fd/{}", dir.as_raw_fd())) else {
            return ById::Unsupported;
        };
        match target.strip_prefix(root) {
            Ok(below) => ById::Path(format!("/{}", below.display())),
            Err(_) => ById::Unsupported, // mounted elsewhere in this namespace than the root tcpkit uses
        }
    }

    fn rescan(&mut self) {
        self.last_scan = Some(Instant::now());
        let Some(root) = self.root.clone() else { return };
        walk(&root, |id, path| {
            if !matches!(self.known.get(&id), Some(Some(_))) {
                self.known.insert(id, Some(Identity::from_path(path)));
            }
        });
    }
}

impl Identity {
    /// The text column (-C): the container's names (`namespace/pod/container`, or its docker or podman
    /// name), else its ID as `docker ps` shortens it, else the unit, else `-`. The ID comes before the unit:
    /// the unit above a container is often the runtime's own (containerd.service), which says less.
    pub fn column(&self) -> &str {
        match (&self.label, &self.container_id, &self.unit) {
            (Some(label), _, _) => label,
            (None, Some(id), _) => &id[..SHORT_ID],
            (None, None, Some(unit)) => unit,
            (None, None, None) => "-",
        }
    }
}

/// `docker ps` shows 12 hex digits; --container asks for at least as many.
pub const SHORT_ID: usize = 12;

/// Calls `visit` with the id (inode number) and the path from the root (`/`, `/system.slice`, ...) of every
/// directory of the cgroup tree under `root`.
fn walk(root: &Path, mut visit: impl FnMut(u64, &str)) {
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(meta) = std::fs::metadata(&dir) else { continue }; // removed since it was listed
        let below = dir.strip_prefix(root).unwrap_or(Path::new(""));
        visit(meta.ino(), &format!("/{}", below.display()));
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(entry.path());
            }
        }
    }
}

/// The cgroup directory of one container (--container): `arg` is its full ID, a unique prefix of at least
/// 12 hex digits, or its docker or podman name (from the files under `host_root`). The shallowest directory
/// naming the container, so tasks in its sub-cgroups are kept too. The error says what is wrong, in one line.
pub fn container_dir(arg: &str, host_root: &Path) -> Result<PathBuf, String> {
    let hex = (SHORT_ID..=64).contains(&arg.len()) && arg.bytes().all(|b| b.is_ascii_hexdigit());
    let is_name = crate::names::is_docker_name(arg);
    if !hex && !is_name {
        return Err(format!(
            "--container {arg}: neither a container ID ({SHORT_ID} to 64 hex digits: its full ID or a unique prefix) \
             nor a container name (letters, digits, _ . -)"
        ));
    }
    if hex {
        if let Some(dir) = dir_of_id(&arg.to_ascii_lowercase())? {
            return Ok(dir);
        }
    }
    let ids = if is_name { NameFiles::new(host_root).ids_named(arg) } else { Vec::new() };
    let root = host_root.display();
    match ids.as_slice() {
        [] if hex => Err(format!(
            "--container {arg}: no container's cgroup has an ID starting with it, and no docker or podman \
             container under {root} has that name"
        )),
        [] => Err(format!("--container {arg}: no docker or podman container under {root} has that name")),
        [id] => {
            dir_of_id(id)?.ok_or_else(|| format!("--container {arg}: container {} has no cgroup now", &id[..SHORT_ID]))
        }
        many => {
            let short: Vec<&str> = many.iter().map(|id| &id[..SHORT_ID]).collect();
            Err(format!(
                "--container {arg}: {} containers have that name ({}); give an ID",
                many.len(),
                short.join(", ")
            ))
        }
    }
}

/// The cgroup directory of each pod in `uids` that has one now: the shallowest directory whose name carries
/// its UID (kubelet's `kubepods-<qos>-pod<uid>.slice`, or `pod<uid>` with the cgroupfs driver).
pub fn pod_dirs(uids: &[&str]) -> HashMap<String, PathBuf> {
    let Some(root) = cgroup2_root() else { return HashMap::new() };
    shallowest_dirs(&root, |identity| identity.pod_uid.filter(|uid| uids.contains(&uid.as_str())))
}

/// Key -> the shallowest directory (fewest path components) of the cgroup tree under `root` whose path
/// gives that key (a container's ID, a pod's UID): the directory a runtime or kubelet made, above the
/// sub-cgroups it holds.
fn shallowest_dirs(root: &Path, key_of: impl Fn(Identity) -> Option<String>) -> HashMap<String, PathBuf> {
    let mut found: HashMap<String, (usize, PathBuf)> = HashMap::new();
    walk(root, |_, path| {
        let Some(key) = key_of(Identity::from_path(path)) else { return };
        let depth = path.matches('/').count();
        if found.get(&key).is_none_or(|(known, _)| depth < *known) {
            found.insert(key, (depth, root.join(path.trim_start_matches('/'))));
        }
    });
    found.into_iter().map(|(key, (_, dir))| (key, dir)).collect()
}

/// The shallowest cgroup directory of the one container whose ID starts with `prefix` (lowercase hex);
/// None when no container's does.
fn dir_of_id(prefix: &str) -> Result<Option<PathBuf>, String> {
    let root = cgroup2_root().ok_or("--container: no cgroup v2 hierarchy is mounted, so no container can be found")?;
    let mut found: Vec<(String, PathBuf)> =
        shallowest_dirs(&root, |identity| identity.container_id.filter(|id| id.starts_with(prefix)))
            .into_iter()
            .collect();
    found.sort();
    match found.as_slice() {
        [] => Ok(None),
        [(_, dir)] => Ok(Some(dir.clone())),
        many => {
            let ids: Vec<&str> = many.iter().map(|(id, _)| id.get(..prefix.len() + 1).unwrap_or(id)).collect();
            Err(format!(
                "--container {prefix}: ambiguous, {} containers' IDs start with it ({}...); give more digits",
                many.len(),
                ids.join("..., ")
            ))
        }
    }
}

/// Where the cgroup v2 tree is mounted: /sys/fs/cgroup, or /sys/fs/cgroup/unified on hybrid systems.
pub(crate) fn cgroup2_root() -> Option<PathBuf> {
    ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"]
        .into_iter()
        .map(PathBuf::from)
        .find(|dir| on_cgroup2(dir).is_ok_and(|y| y))
}

/// Whether `dir` is on a cgroup v2 file system (the hierarchy BPF's cgroup helpers see).
pub fn on_cgroup2(dir: &Path) -> nix::Result<bool> {
    Ok(nix::sys::statfs::statfs(dir)?.filesystem_type().0 as i64 == CGROUP2_SUPER_MAGIC)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    const UID: &str = "5e0b5a4b-7f0a-4c1e-9d3b-2a1f0e9c8b7a";

    fn check(path: &str, runtime: Option<&str>, container: bool, pod: bool, unit: Option<&str>) {
        let id = Identity::from_path(path);
        assert_eq!(id.cgroup, path);
        assert_eq!(id.container_id.as_deref(), container.then_some(ID), "{path}");
        assert_eq!(id.container_runtime, runtime, "{path}");
        assert_eq!(id.pod_uid.as_deref(), pod.then_some(UID), "{path}");
        assert_eq!(id.unit.as_deref(), unit, "{path}");
    }

    #[test]
    fn reads_every_runtime_layout() {
        let uid_ = UID.replace('-', "_");
        let docker_scope = format!("docker-{ID}.scope");
        check(&format!("/system.slice/{docker_scope}"), Some("docker"), true, false, Some(&docker_scope));
        check(&format!("/docker/{ID}"), Some("docker"), true, false, None);
        let pod_slice = format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{uid_}.slice");
        let scope = format!("cri-containerd-{ID}.scope");
        check(&format!("{pod_slice}/{scope}"), Some("containerd"), true, true, Some(&scope));
        check(&format!("{pod_slice}:cri-containerd:{ID}"), Some("containerd"), true, true, None);
        let scope = format!("crio-{ID}.scope");
        check(&format!("{pod_slice}/{scope}"), Some("cri-o"), true, true, Some(&scope));
        let guaranteed = format!("/kubepods.slice/kubepods-pod{uid_}.slice/cri-containerd-{ID}.scope");
        check(&guaranteed, Some("containerd"), true, true, Some(&format!("cri-containerd-{ID}.scope")));
        check(&format!("/kubepods/besteffort/pod{UID}/{ID}"), None, true, true, None);
        check(
            &format!("/machine.slice/libpod-{ID}.scope"),
            Some("podman"),
            true,
            false,
            Some(&format!("libpod-{ID}.scope")),
        );
        check(&format!("/libpod_parent/libpod-{ID}"), Some("podman"), true, false, None);
        let quadlet = format!("/system.slice/web.service/libpod-payload-{ID}");
        check(&quadlet, Some("podman"), true, false, Some("web.service"));
        check("/system.slice/web.service/libpod-payload-xyz", None, false, false, Some("web.service"));
        check(&format!("/machine.slice/libpod-conmon-{ID}.scope"), None, false, false, None);
        check("/system.slice/nginx.service", None, false, false, Some("nginx.service"));
        check("/user.slice/user-1000.slice/session-3.scope", None, false, false, Some("session-3.scope"));
        check("/", None, false, false, None);
        check("/docker/not-an-id", None, false, false, None);
    }

    #[test]
    fn the_column_is_the_short_id_else_the_unit_else_a_dash() {
        assert_eq!(Identity::from_path(&format!("/system.slice/docker-{ID}.scope")).column(), &ID[..12]);
        assert_eq!(Identity::from_path("/system.slice/nginx.service").column(), "nginx.service");
        assert_eq!(Identity::from_path("/user.slice").column(), "-");
    }

    /// Makes a cgroup named NAME-<pid>.service under the root; returns its path, id and unit name.
    fn real_cgroup(root: &Path, name: &str) -> (PathBuf, u64, String) {
        let unit = format!("{name}-{}.service", std::process::id());
        let dir = root.join(&unit);
        std::fs::create_dir(&dir).expect("making a cgroup (as root)");
        let id = std::fs::metadata(&dir).unwrap().ino();
        (dir, id, unit)
    }

    #[test]
    fn resolves_real_cgroups_by_id_and_by_walking() {
        for by_id in [true, false] {
            let mut cache = CgroupCache::new(Path::new("/"));
            let Some(root) = cache.root.clone() else { panic!("no cgroup v2 hierarchy is mounted") };
            if !by_id {
                cache.by_id = None; // as without CAP_DAC_READ_SEARCH
            }
            let name = if by_id { "tcpkit-by-id" } else { "tcpkit-walk" };
            let (dir, id, unit) = real_cgroup(&root, name);
            let found = cache.lookup(id).map(|i| (i.cgroup.clone(), i.unit.clone()));
            assert_eq!(found, Some((format!("/{unit}"), Some(unit))), "by id: {by_id}");
            assert!(cache.lookup(u64::MAX - 1).is_none(), "an id no cgroup has");
            assert!(cache.lookup(0).is_none());
            // Made right after a lookup: by id it is found at once; a walk waits for the rate limit.
            let (newer, newer_id, newer_unit) = real_cgroup(&root, &format!("{name}-newer"));
            let found = cache.lookup(newer_id).and_then(|i| i.unit.clone());
            assert_eq!(found, by_id.then_some(newer_unit), "by id: {by_id}");
            // Gone: the kernel says so by id; the walk no longer finds it.
            std::fs::remove_dir(&dir).unwrap();
            std::fs::remove_dir(&newer).unwrap();
        }
    }

    #[test]
    fn removed_cgroups_are_kept_a_while_then_forgotten() {
        let (gone, next) = (u64::MAX - 7, u64::MAX - 8);
        let mut cache = CgroupCache::new(Path::new("/"));
        cache.forget_after = Duration::from_millis(50);
        cache.learn(gone, "/system.slice/gone.service");
        cache.removed(gone);
        let unit = cache.lookup(gone).and_then(|i| i.unit.clone());
        assert_eq!(unit.as_deref(), Some("gone.service"), "kept for the closes still to come");
        std::thread::sleep(Duration::from_millis(60));
        cache.learn(next, "/system.slice/next.service");
        assert!(!cache.known.contains_key(&gone), "forgotten once the while has passed");
        assert!(cache.known.contains_key(&next) && cache.removed.is_empty());
    }

    #[test]
    fn a_cgroup_gone_before_its_first_lookup_is_remembered_as_unknown() {
        let mut cache = CgroupCache::new(Path::new("/"));
        let root = cache.root.clone().expect("a cgroup v2 hierarchy");
        let (dir, id, _) = real_cgroup(&root, "tcpkit-gone");
        std::fs::remove_dir(&dir).unwrap();
        assert!(cache.lookup(id).is_none());
        assert!(matches!(cache.known.get(&id), Some(None)), "remembered, so no walk is made for it again");
    }
}
