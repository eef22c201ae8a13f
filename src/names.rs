//! Human names of containers and pods, from files the node already has, read-only, under --host-root
//! (shared design notes, section 12): the OCI spec that containerd (k3s's too) and CRI-O keep for each
//! container holds its pod's namespace and name and its own name as annotations, from before its process
//! starts; kubelet's log symlinks name the containers of any CRI runtime, once started; docker's
//! config.v2.json and podman's containers.json name their containers.
//! Nobody is asked: no API server, no runtime socket. Every file is read with a size cap, as a regular file
//! only (a FIFO would block, a symlink loop fails), and checked: a bad one gives no names and one warning.
use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use nix::libc;
use serde_json::Value;

/// Kubelet's symlinks, one per running container: `<pod>_<namespace>_<container>-<64-hex id>.log`.
const KUBELET_LINKS: &str = "var/log/containers";
/// Kubelet's pod log directories: `<namespace>_<pod>_<pod uid>`.
const KUBELET_PODS: &str = "var/log/pods";
const DOCKER_CONTAINERS: &str = "var/lib/docker/containers";
/// Root podman's container list, named after the storage driver (containers/storage: `<driver>-containers`);
/// overlay is the default, vfs where overlay cannot run.
const PODMAN_DRIVERS: [&str; 4] = ["overlay", "vfs", "btrfs", "zfs"];

/// Where a CRI runtime keeps each container's OCI spec (`<dir>/<id>/<spec>`), and the annotations in it
/// that name the container, its pod and the pod's namespace.
struct CriSpecs {
    dirs: &'static [&'static str],
    spec: &'static str,
    namespace: &'static str,
    pod: &'static str,
    pod_uid: &'static str,
    container: &'static str,
    /// The annotation whose value is `sandbox` for the pod's own (pause) container, which has no name.
    kind: &'static str,
}

/// containerd's CRI plugin: the task bundle, from before the process starts to its exit (k3s runs its
/// own containerd under /run/k3s).
const CONTAINERD: CriSpecs = CriSpecs {
    dirs: &[
        "run/containerd/io.containerd.runtime.v2.task/k8s.io",
        "run/k3s/containerd/io.containerd.runtime.v2.task/k8s.io",
    ],
    spec: "config.json",
    namespace: "io.kubernetes.cri.sandbox-namespace",
    pod: "io.kubernetes.cri.sandbox-name",
    pod_uid: "io.kubernetes.cri.sandbox-uid",
    container: "io.kubernetes.cri.container-name",
    kind: "io.kubernetes.cri.container-type",
};

/// CRI-O: the container's userdata directory in containers/storage (run root, else graph root), named after
/// the storage driver (overlay by default, vfs where overlay cannot run).
const CRIO: CriSpecs = CriSpecs {
    dirs: &[
        "run/containers/storage/overlay-containers",
        "var/lib/containers/storage/overlay-containers",
        "run/containers/storage/vfs-containers",
        "var/lib/containers/storage/vfs-containers",
    ],
    spec: "userdata/config.json",
    namespace: "io.kubernetes.pod.namespace",
    pod: "io.kubernetes.pod.name",
    pod_uid: "io.kubernetes.pod.uid",
    container: "io.kubernetes.container.name",
    kind: "io.kubernetes.cri-o.ContainerType",
};

/// A docker config.v2.json is a few kilobytes; podman's containers.json about 1 kB per container; an OCI
/// spec tens of kilobytes (its environment and mounts make it grow).
const DOCKER_CONFIG_CAP: u64 = 1 << 20;
const OCI_SPEC_CAP: u64 = 4 << 20;
const PODMAN_LIST_CAP: u64 = 16 << 20;
/// Directory entries read per scan of kubelet's directories (a node runs at most a few hundred pods).
const ENTRIES_CAP: usize = 65536;

/// What the node's files call a container.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Names {
    /// Kubernetes namespace and pod.
    pub namespace: Option<String>,
    pub pod: Option<String>,
    /// The container's name: in the pod spec under Kubernetes, `docker ps`'s or `podman ps`'s otherwise.
    pub container: Option<String>,
    /// The pod's own (pause) container, which has no name of its own: its names are complete without one.
    pub sandbox: bool,
}

impl Names {
    /// The most readable form: `namespace/pod/container` under Kubernetes, else the container's name.
    pub fn label(&self) -> Option<String> {
        match (&self.namespace, &self.pod, &self.container) {
            (Some(ns), Some(pod), Some(c)) => Some(format!("{ns}/{pod}/{c}")),
            (Some(ns), Some(pod), None) => Some(format!("{ns}/{pod}")),
            (_, _, Some(c)) => Some(c.clone()),
            _ => None,
        }
    }
}

/// The node's name files, and what was last read from those that name many containers at once.
pub struct NameFiles {
    root: PathBuf,
    /// Kubelet's symlinks, by container ID, as of the directory's modification time.
    kubelet: Listing<HashMap<String, Names>>,
    /// Pod UID -> (namespace, pod), from kubelet's pod directories.
    pods: Listing<HashMap<String, (String, String)>>,
    /// Podman's containers, by ID.
    podman: Listing<HashMap<String, String>>,
    warned: HashSet<PathBuf>,
}

/// A file or directory read whole, kept until its modification time changes.
struct Listing<T> {
    mtime: Option<SystemTime>,
    content: T,
}

impl<T: Default> Default for Listing<T> {
    fn default() -> Self {
        Listing { mtime: None, content: T::default() }
    }
}

impl NameFiles {
    pub fn new(host_root: &Path) -> NameFiles {
        NameFiles {
            root: host_root.to_path_buf(),
            kubelet: Listing::default(),
            pods: Listing::default(),
            podman: Listing::default(),
            warned: HashSet::new(),
        }
    }

    /// The names of a container, from what its cgroup said: its ID, runtime and pod UID.
    pub fn names(&mut self, container_id: &str, runtime: Option<&str>, pod_uid: Option<&str>) -> Names {
        let mut names = Names::default();
        if let Some(uid) = pod_uid {
            let runtimes: &[&CriSpecs] = match runtime {
                Some("containerd") => &[&CONTAINERD],
                Some("cri-o") => &[&CRIO],
                _ => &[&CONTAINERD, &CRIO], // cgroupfs driver: the layout does not say which
            };
            for specs in runtimes {
                if let Some(found) = self.cri_names(specs, container_id, uid) {
                    return found;
                }
            }
            self.refresh_kubelet();
            if let Some(found) = self.kubelet.content.get(container_id) {
                names = found.clone();
            } else if let Some((ns, pod)) = self.pods.content.get(uid) {
                // No symlink (not made yet, or its name cut at 255 bytes): the pod is still known.
                (names.namespace, names.pod) = (Some(ns.clone()), Some(pod.clone()));
            }
            return names;
        }
        names.container = match runtime {
            Some("docker") => self.docker_name(container_id),
            Some("podman") => self.podman_name(container_id),
            _ => None,
        };
        names
    }

    /// Kubelet's pods on this node in `namespace` and named `pod` (None: any), as (uid, namespace, pod), from
    /// its pod log directories (--pod, --namespace).
    pub fn pods_matching(&mut self, namespace: Option<&str>, pod: Option<&str>) -> Vec<(String, String, String)> {
        self.refresh_kubelet();
        let mut found: Vec<(String, String, String)> = (self.pods.content.iter())
            .filter(|(_, (ns, name))| namespace.is_none_or(|n| n == ns) && pod.is_none_or(|p| p == name))
            .map(|(uid, (ns, name))| (uid.clone(), ns.clone(), name.clone()))
            .collect();
        found.sort();
        found
    }

    /// IDs of the docker and podman containers named `name` (--container NAME).
    pub fn ids_named(&mut self, name: &str) -> Vec<String> {
        let mut ids = Vec::new();
        self.refresh_podman();
        ids.extend(self.podman.content.iter().filter(|(_, n)| *n == name).map(|(id, _)| id.clone()));
        for id in dir_names(&self.root.join(DOCKER_CONTAINERS)).into_iter().filter(|id| is_container_id(id)) {
            if self.docker_name(&id).as_deref() == Some(name) {
                ids.push(id);
            }
        }
        ids.sort();
        ids.dedup();
        ids
    }

    /// A CRI container's names from the annotations of its OCI spec; nothing else in the spec is kept (it
    /// holds the container's environment).
    fn cri_names(&mut self, specs: &CriSpecs, id: &str, pod_uid: &str) -> Option<Names> {
        let (path, spec) = specs.dirs.iter().find_map(|dir| {
            let path = self.root.join(dir).join(id).join(specs.spec);
            self.read_json(&path, OCI_SPEC_CAP).map(|spec| (path, spec))
        })?;
        let notes = spec.get("annotations").and_then(Value::as_object);
        let note = |key: &str| notes.and_then(|n| n.get(key)).and_then(Value::as_str);
        let (namespace, pod) = (note(specs.namespace), note(specs.pod));
        let (Some(namespace), Some(pod)) = (namespace, pod) else {
            self.warn(&path, "no pod annotations");
            return None;
        };
        if note(specs.pod_uid).is_some_and(|uid| uid != pod_uid) {
            self.warn(&path, "its pod UID is not the one of the container's cgroup");
            return None;
        }
        let sandbox = note(specs.kind) == Some("sandbox");
        let container = if sandbox { None } else { note(specs.container) };
        if ![Some(namespace), Some(pod), container].iter().flatten().all(|n| is_dns_name(n)) {
            self.warn(&path, "a name with unexpected characters");
            return None;
        }
        Some(Names {
            namespace: Some(namespace.to_string()),
            pod: Some(pod.to_string()),
            container: container.map(str::to_string),
            sandbox,
        })
    }

    fn docker_name(&mut self, id: &str) -> Option<String> {
        let path = self.root.join(DOCKER_CONTAINERS).join(id).join("config.v2.json");
        let config = self.read_json(&path, DOCKER_CONFIG_CAP)?;
        let name = config.get("Name").and_then(Value::as_str).map(|n| n.trim_start_matches('/'));
        self.checked(&path, name, is_docker_name)
    }

    fn podman_name(&mut self, id: &str) -> Option<String> {
        self.refresh_podman();
        self.podman.content.get(id).cloned()
    }

    fn refresh_podman(&mut self) {
        let storage = self.root.join("var/lib/containers/storage");
        let lists = PODMAN_DRIVERS.map(|driver| storage.join(format!("{driver}-containers/containers.json")));
        let path = lists.iter().find(|p| p.exists()).unwrap_or(&lists[0]).clone();
        let Some(mtime) = changed(&path, self.podman.mtime) else { return };
        self.podman = Listing { mtime: Some(mtime), content: HashMap::new() };
        let Some(list) = self.read_json(&path, PODMAN_LIST_CAP) else { return };
        let Some(entries) = list.as_array() else {
            self.warn(&path, "not a list of containers");
            return;
        };
        for entry in entries {
            let id = entry.get("id").and_then(Value::as_str).filter(|id| is_container_id(id));
            let name = entry.get("names").and_then(Value::as_array).and_then(|n| n.first()).and_then(Value::as_str);
            match (id, name) {
                (Some(id), Some(name)) if is_docker_name(name) => {
                    self.podman.content.insert(id.to_string(), name.to_string());
                }
                (Some(_), Some(_)) => self.warn(&path, "a container name with unexpected characters"),
                _ => {}
            }
        }
    }

    fn refresh_kubelet(&mut self) {
        let links = self.root.join(KUBELET_LINKS);
        if let Some(mtime) = changed(&links, self.kubelet.mtime) {
            let content = dir_names(&links).iter().filter_map(|n| kubelet_link(n)).collect();
            self.kubelet = Listing { mtime: Some(mtime), content };
        }
        let pods = self.root.join(KUBELET_PODS);
        if let Some(mtime) = changed(&pods, self.pods.mtime) {
            let content = dir_names(&pods).iter().filter_map(|n| kubelet_pod_dir(n)).collect();
            self.pods = Listing { mtime: Some(mtime), content };
        }
    }

    /// A JSON file, whole, if it is a regular file within `cap` bytes; else a warning (once per file).
    fn read_json(&mut self, path: &Path, cap: u64) -> Option<Value> {
        let bytes = match read_capped(path, cap) {
            Ok(Some(bytes)) => bytes,
            Ok(None) => return None, // not there (yet): no warning
            Err(why) => {
                self.warn(path, &why);
                return None;
            }
        };
        match serde_json::from_slice(&bytes) {
            Ok(value) => Some(value),
            Err(e) => {
                self.warn(path, &format!("not valid JSON ({})", json_error(&e)));
                None
            }
        }
    }

    fn checked(&mut self, path: &Path, name: Option<&str>, valid: fn(&str) -> bool) -> Option<String> {
        match name {
            Some(name) if valid(name) => Some(name.to_string()),
            Some(_) => {
                self.warn(path, "a name with unexpected characters");
                None
            }
            None => None,
        }
    }

    /// One line on stderr per file, however often it is read: what is wrong, never what it holds.
    fn warn(&mut self, path: &Path, why: &str) {
        if self.warned.insert(path.to_path_buf()) {
            eprintln!("tcpkit: warning: {}: {why}; names from it are left out", path.display());
        }
    }
}

/// What is wrong with a JSON file, in a word: never what it holds.
fn json_error(e: &serde_json::Error) -> &'static str {
    use serde_json::error::Category;
    match e.classify() {
        Category::Io => "unreadable",
        Category::Syntax => "a syntax error",
        Category::Data => "unexpected data",
        Category::Eof => "truncated",
    }
}

/// The modification time of `path` if it differs from `known` (a file or directory that appeared, changed
/// or went away; gone reads as the epoch).
fn changed(path: &Path, known: Option<SystemTime>) -> Option<SystemTime> {
    let mtime = std::fs::metadata(path).and_then(|m| m.modified()).unwrap_or(SystemTime::UNIX_EPOCH);
    (known != Some(mtime)).then_some(mtime)
}

/// The file's bytes: Ok(None) when it does not exist, Err(why) when it is not a regular file, is larger
/// than `cap` or cannot be read. Opened without blocking (a FIFO in its place must not hang tcpkit).
fn read_capped(path: &Path, cap: u64) -> Result<Option<Vec<u8>>, String> {
    let file = match OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY).open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot be opened ({e})")),
    };
    let meta = file.metadata().map_err(|e| format!("cannot be read ({e})"))?;
    if !meta.is_file() {
        return Err("not a regular file".into());
    }
    if meta.len() > cap {
        return Err(format!("larger than {} kB", cap / 1024));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    File::take(file, cap + 1).read_to_end(&mut bytes).map_err(|e| format!("cannot be read ({e})"))?;
    if bytes.len() as u64 > cap {
        return Err(format!("larger than {} kB", cap / 1024));
    }
    Ok(Some(bytes))
}

/// Names of the entries of a directory (UTF-8 ones; at most ENTRIES_CAP), empty when it is not there.
fn dir_names(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    entries.take(ENTRIES_CAP).flatten().filter_map(|e| e.file_name().into_string().ok()).collect()
}

/// `<pod>_<namespace>_<container>-<id>.log` -> (id, names). Names are DNS-1123, so none holds a `_`, and the
/// ID follows the last `-`; a name cut at 255 bytes leaves no whole ID, and no answer.
fn kubelet_link(file: &str) -> Option<(String, Names)> {
    let (names, id) = file.strip_suffix(".log")?.rsplit_once('-')?;
    let mut parts = names.split('_');
    let (pod, namespace, container) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || !is_container_id(id) || ![pod, namespace, container].iter().all(|n| is_dns_name(n)) {
        return None;
    }
    let names = Names {
        namespace: Some(namespace.to_string()),
        pod: Some(pod.to_string()),
        container: Some(container.to_string()),
        sandbox: false,
    };
    Some((id.to_string(), names))
}

/// `<namespace>_<pod>_<uid>` -> (uid, (namespace, pod)).
fn kubelet_pod_dir(dir: &str) -> Option<(String, (String, String))> {
    let mut parts = dir.split('_');
    let (namespace, pod, uid) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || !is_pod_uid(uid) || !is_dns_name(namespace) || !is_dns_name(pod) {
        return None;
    }
    Some((uid.to_string(), (namespace.to_string(), pod.to_string())))
}

/// A pod UID as kubelet writes it: 36 characters, hex digits and dashes.
pub fn is_pod_uid(s: &str) -> bool {
    s.len() == 36 && s.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')
}

pub fn is_container_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Kubernetes object names: DNS-1123 (lowercase letters, digits, `-` and `.`), at most 253 characters.
pub fn is_dns_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
}

/// Docker's and podman's container names: `[a-zA-Z0-9][a-zA-Z0-9_.-]*`.
pub fn is_docker_name(s: &str) -> bool {
    s.len() <= 253
        && s.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn reads_kubelet_link_names() {
        let (id, names) = kubelet_link(&format!("web-7d4b9-x2k_shop_nginx-{ID}.log")).unwrap();
        assert_eq!(id, ID);
        assert_eq!(names.label().as_deref(), Some("shop/web-7d4b9-x2k/nginx"));
        for bad in [
            format!("web_shop_nginx-{}.log", &ID[..60]), // cut at 255 bytes
            format!("web_shop-{ID}.log"),
            format!("web_shop_nginx_x-{ID}.log"),
            format!("Web_shop_nginx-{ID}.log"),
            format!("web_shop_nginx-{ID}.txt"),
            format!("web_sh\u{7}op_nginx-{ID}.log"),
        ] {
            assert_eq!(kubelet_link(&bad), None, "{bad}");
        }
        let uid = "5e0b5a4b-7f0a-4c1e-9d3b-2a1f0e9c8b7a";
        assert_eq!(kubelet_pod_dir(&format!("shop_web-1_{uid}")), Some((uid.into(), ("shop".into(), "web-1".into()))));
        assert_eq!(kubelet_pod_dir("shop_web-1_not-a-uid"), None);
    }

    #[test]
    fn cri_specs_name_only_their_own_pod_with_valid_names() {
        const UID: &str = "5e0b5a4b-7f0a-4c1e-9d3b-2a1f0e9c8b7a";
        let root = std::env::temp_dir().join(format!("tcpkit-unit-cri-{}", std::process::id()));
        let spec = root.join(CONTAINERD.dirs[0]).join(ID).join("config.json");
        std::fs::create_dir_all(spec.parent().unwrap()).unwrap();
        let mut files = NameFiles::new(&root);
        let mut names_from = |annotations: &str| {
            std::fs::write(&spec, format!(r#"{{"ociVersion":"1.1.0","annotations":{{{annotations}}}}}"#)).unwrap();
            files.warned.clear();
            files.names(ID, Some("containerd"), Some(UID)).label()
        };
        let pod = r#""io.kubernetes.cri.sandbox-namespace":"shop","io.kubernetes.cri.sandbox-name":"web-1""#;
        let uid = format!(r#","io.kubernetes.cri.sandbox-uid":"{UID}""#);
        let named = format!(r#"{pod}{uid},"io.kubernetes.cri.container-name":"nginx""#);
        assert_eq!(names_from(&named).as_deref(), Some("shop/web-1/nginx"));
        let sandbox = format!(r#"{pod}{uid},"io.kubernetes.cri.container-type":"sandbox""#);
        assert_eq!(names_from(&sandbox).as_deref(), Some("shop/web-1"));
        let other_pod = named.replace(UID, "00000000-0000-0000-0000-000000000000");
        assert_eq!(names_from(&other_pod), None, "another pod's spec");
        assert_eq!(names_from(&named.replace("nginx", "Nginx")), None, "not DNS-1123");
        assert_eq!(names_from(&named.replace("web-1", "web_1")), None, "not DNS-1123");
        assert_eq!(names_from(r#""io.kubernetes.cri.container-name":"nginx""#), None, "no pod");
        assert_eq!(names_from(&named.replace("\"nginx\"", "7")), Some("shop/web-1".into()), "a number: no name");
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn podmans_list_is_found_whatever_its_storage_driver() {
        let root = std::env::temp_dir().join(format!("tcpkit-unit-vfs-{}", std::process::id()));
        let list = root.join("var/lib/containers/storage/vfs-containers/containers.json");
        std::fs::create_dir_all(list.parent().unwrap()).unwrap();
        std::fs::write(&list, format!(r#"[{{"id":"{ID}","names":["on-vfs"]}}]"#)).unwrap();
        let names = NameFiles::new(&root).names(ID, Some("podman"), None);
        assert_eq!(names.container.as_deref(), Some("on-vfs"));
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn container_names_are_dockers_pattern() {
        for good in ["redis-cache", "a", "web_1.x"] {
            assert!(is_docker_name(good), "{good}");
        }
        for bad in ["", "/redis", "-x", "a b", "a\nb", "ä"] {
            assert!(!is_docker_name(bad), "{bad:?}");
        }
    }
}

/// The parsers against what a hostile or broken node could hold (proptest, a bounded number of cases per
/// property, in every `cargo test`): arbitrary names, and real files' bytes flipped, inserted, deleted and
/// cut. Whatever comes in, nothing panics, and every name that comes out is valid for its kind.
#[cfg(test)]
mod fuzz {
    use super::*;
    use proptest::prelude::*;

    const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    const UID: &str = "5e0b5a4b-7f0a-4c1e-9d3b-2a1f0e9c8b7a";

    fn config() -> ProptestConfig {
        ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() }
    }

    /// Applies (position, byte, operation) edits: 0 replaces, 1 inserts, 2 deletes, 3 cuts the rest.
    fn mutate(mut bytes: Vec<u8>, edits: &[(usize, u8, u8)]) -> Vec<u8> {
        for &(at, byte, op) in edits {
            let at = if bytes.is_empty() { 0 } else { at % (bytes.len() + 1) };
            match op % 4 {
                0 if at < bytes.len() => bytes[at] = byte,
                1 => bytes.insert(at, byte),
                2 if at < bytes.len() => {
                    bytes.remove(at);
                }
                3 => bytes.truncate(at),
                _ => {}
            }
        }
        bytes
    }

    fn valid(names: &Names) -> bool {
        names.namespace.as_deref().is_none_or(is_dns_name)
            && names.pod.as_deref().is_none_or(is_dns_name)
            && names.container.as_deref().is_none_or(|c| is_dns_name(c) || is_docker_name(c))
    }

    /// Each runtime's file, as it writes it, for one container (ID) of one pod (UID).
    fn files() -> [(&'static str, Option<&'static str>, bool, String, String); 4] {
        let spec = format!(
            r#"{{"ociVersion":"1.1.0","process":{{"env":["SECRET=x"]}},"annotations":{{"io.kubernetes.cri.container-type":"container","io.kubernetes.cri.container-name":"nginx","io.kubernetes.cri.sandbox-name":"web-1","io.kubernetes.cri.sandbox-namespace":"shop","io.kubernetes.cri.sandbox-uid":"{UID}","io.kubernetes.pod.name":"web-1","io.kubernetes.pod.namespace":"shop","io.kubernetes.pod.uid":"{UID}","io.kubernetes.container.name":"nginx"}}}}"#
        );
        [
            (
                "docker",
                None,
                false,
                format!("{DOCKER_CONTAINERS}/{ID}/config.v2.json"),
                format!(r#"{{"ID":"{ID}","Name":"/redis-cache","Config":{{"Env":["A=b"]}}}}"#),
            ),
            (
                "podman",
                None,
                false,
                "var/lib/containers/storage/overlay-containers/containers.json".to_string(),
                format!(r#"[{{"id":"{ID}","names":["web-frontend"],"metadata":"{{\"name\":\"web-frontend\"}}"}}]"#),
            ),
            ("containerd", Some(UID), true, format!("{}/{ID}/{}", CONTAINERD.dirs[0], CONTAINERD.spec), spec.clone()),
            ("cri-o", Some(UID), true, format!("{}/{ID}/{}", CRIO.dirs[0], CRIO.spec), spec),
        ]
    }

    proptest! {
        #![proptest_config(config())]

        #[test]
        fn kubelet_names_are_valid_or_absent(name in "\\PC{0,300}") {
            if let Some((id, names)) = kubelet_link(&name) {
                prop_assert!(is_container_id(&id) && valid(&names) && names.container.is_some());
            }
            if let Some((uid, (ns, pod))) = kubelet_pod_dir(&name) {
                prop_assert!(uid.len() == 36 && is_dns_name(&ns) && is_dns_name(&pod));
            }
        }

        #[test]
        fn kubelet_names_made_near_valid_ones_are_valid_or_absent(
            edits in proptest::collection::vec((any::<usize>(), any::<u8>(), any::<u8>()), 0..8)
        ) {
            let link = mutate(format!("web-7d4b9-x2k_shop_nginx-{ID}.log").into_bytes(), &edits);
            if let Some((id, names)) = kubelet_link(&String::from_utf8_lossy(&link)) {
                prop_assert!(is_container_id(&id) && valid(&names));
            }
            let dir = mutate(format!("shop_web-1_{UID}").into_bytes(), &edits);
            if let Some((_, (ns, pod))) = kubelet_pod_dir(&String::from_utf8_lossy(&dir)) {
                prop_assert!(is_dns_name(&ns) && is_dns_name(&pod));
            }
        }

        #[test]
        fn cgroup_paths_give_valid_ids_or_none(
            parts in proptest::collection::vec(
                prop_oneof![
                    "\\PC{0,80}",
                    Just(format!("cri-containerd-{ID}.scope")),
                    Just(format!("kubepods-besteffort-pod{}.slice", UID.replace('-', "_"))),
                    Just(format!("pod{UID}")),
                    Just(format!("libpod-payload-{ID}")),
                    Just("kubepods".to_string()),
                    Just("docker".to_string()),
                    Just("libpod_parent".to_string()),
                    Just(ID.to_string()),
                ],
                0..8,
            )
        ) {
            let id = crate::identity::Identity::from_path(&format!("/{}", parts.join("/")));
            prop_assert!(id.container_id.as_deref().is_none_or(is_container_id));
            prop_assert!(id.pod_uid.as_deref().is_none_or(is_pod_uid));
        }

        #[test]
        fn broken_runtime_files_give_valid_names_or_none(
            which in 0usize..4,
            edits in proptest::collection::vec((any::<usize>(), any::<u8>(), any::<u8>()), 0..12)
        ) {
            let root = std::env::temp_dir().join(format!("tcpkit-fuzz-{}-{which}", std::process::id()));
            let (runtime, pod_uid, kubernetes, path, text) = files()[which].clone();
            let file = root.join(&path);
            std::fs::create_dir_all(file.parent().unwrap()).unwrap();
            std::fs::write(&file, mutate(text.into_bytes(), &edits)).unwrap();
            let names = NameFiles::new(&root).names(ID, Some(runtime), pod_uid);
            prop_assert!(valid(&names), "{names:?}");
            prop_assert!(kubernetes || names.namespace.is_none());
            std::fs::remove_dir_all(&root).unwrap();
        }
    }
}
