//! The node's files that name containers and pods, laid out under a test's own --host-root exactly as the
//! programs that write them do (kubelet, containerd's CRI plugin, CRI-O, docker, podman: none runs here).
use std::os::unix::fs::symlink;
use std::path::PathBuf;

/// The pod UID of the specs written here.
pub const POD_UID: &str = "0b7e3a52-41d6-4c8e-9f21-6a5b4c3d2e1f";

/// A directory standing for the node's root (--host-root), removed at the end.
pub struct HostRoot(pub PathBuf);

impl HostRoot {
    pub fn new(name: &str) -> HostRoot {
        let dir = std::env::temp_dir().join(format!("tcpkit-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        HostRoot(dir)
    }

    pub fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }

    pub fn write(&self, path: &str, bytes: &[u8]) -> PathBuf {
        let file = self.0.join(path);
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(&file, bytes).unwrap();
        file
    }

    /// Kubelet's pod log directory with one container's first log file, as BuildPodLogsDirectory and
    /// BuildContainerLogsDirectory lay it out.
    pub fn kubelet_pod(&self, namespace: &str, pod: &str, uid: &str, container: &str) -> String {
        let log = format!("var/log/pods/{namespace}_{pod}_{uid}/{container}/0.log");
        self.write(&log, b"");
        format!("/{log}")
    }

    /// Kubelet's symlink for a started container (legacy.go's logSymlink), pointing at its log file.
    pub fn kubelet_link(&self, namespace: &str, pod: &str, container: &str, id: &str, log: &str) {
        let dir = self.0.join("var/log/containers");
        std::fs::create_dir_all(&dir).unwrap();
        symlink(log, dir.join(format!("{pod}_{namespace}_{container}-{id}.log"))).unwrap();
    }

    /// Docker's container store: config.v2.json as moby writes it (its environment included, which tcpkit
    /// must never show), and the Name with its leading `/`.
    pub fn docker(&self, id: &str, name: &str) {
        let config = format!(
            r#"{{"StreamConfig":{{}},"State":{{"Running":true,"Paused":false,"Restarting":false,"OOMKilled":false,"RemovalInProgress":false,"Dead":false,"Pid":4242,"ExitCode":0,"Error":"","StartedAt":"2026-12-05T10:00:00.123456789Z","FinishedAt":"0001-01-01T00:00:00Z","Health":null}},"ID":"{id}","Created":"2026-12-05T09:59:59.987654321Z","Managed":false,"Path":"docker-entrypoint.sh","Args":["redis-server"],"Config":{{"Hostname":"{short}","Domainname":"","User":"","AttachStdin":false,"AttachStdout":false,"AttachStderr":false,"ExposedPorts":{{"6379/tcp":{{}}}},"Tty":false,"OpenStdin":false,"StdinOnce":false,"Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin","REDIS_PASSWORD=do-not-print-me"],"Cmd":["redis-server"],"Image":"redis:7","Volumes":{{"/data":{{}}}},"WorkingDir":"/data","Entrypoint":["docker-entrypoint.sh"],"OnBuild":null,"Labels":{{}}}},"Image":"sha256:{id}","ImageManifest":null,"NetworkSettings":{{"Bridge":"","SandboxID":"","HairpinMode":false,"LinkLocalIPv6Address":"","LinkLocalIPv6PrefixLen":0,"Networks":{{}},"Service":null,"Ports":{{}},"SandboxKey":"","SecondaryIPAddresses":null,"SecondaryIPv6Addresses":null,"IsAnonymousEndpoint":false,"HasSwarmEndpoint":false}},"LogPath":"/var/lib/docker/containers/{id}/{id}-json.log","Name":"/{name}","Driver":"overlay2","OS":"linux","RestartCount":0,"HasBeenStartedBefore":true,"HasBeenManuallyStopped":false,"MountPoints":{{}},"SecretReferences":null,"ConfigReferences":null,"MountLabel":"","ProcessLabel":"","AppArmorProfile":"docker-default","SeccompProfile":"","NoNewPrivileges":false,"HostnamePath":"/var/lib/docker/containers/{id}/hostname","HostsPath":"/var/lib/docker/containers/{id}/hosts","ShmPath":"/var/lib/docker/containers/{id}/mounts/shm","ResolvConfPath":"/var/lib/docker/containers/{id}/resolv.conf","LocalLogCacheMeta":{{"HaveNotifyEnabled":false}}}}"#,
            short = &id[..12]
        );
        self.write(&format!("var/lib/docker/containers/{id}/config.v2.json"), config.as_bytes());
    }

    /// Root podman's container list (containers/storage's containers.json: one line, Go's encoding).
    pub fn podman(&self, entries: &[(&str, &str)]) {
        let list: Vec<String> = entries
            .iter()
            .map(|(id, name)| {
                format!(
                    r#"{{"id":"{id}","names":["{name}"],"image":"{image}","layer":"{layer}","metadata":"{{\"image-name\":\"localhost/web:latest\",\"image-id\":\"{image}\",\"name\":\"{name}\",\"created-at\":1796500000,\"mountlabel\":\"\"}}","big-data-names":["volatile.json"],"big-data-sizes":{{"volatile.json":1207}},"big-data-digests":{{"volatile.json":"sha256:{image}"}},"created":"2026-12-05T10:00:00.123456789Z","flags":{{"MountLabel":"","ProcessLabel":""}}}}"#,
                    image = id.chars().rev().collect::<String>(),
                    layer = id.replace('0', "f"),
                )
            })
            .collect();
        self.write(
            "var/lib/containers/storage/overlay-containers/containers.json",
            format!("[{}]", list.join(",")).as_bytes(),
        );
    }
}

/// A CRI runtime's OCI spec for one container of a pod, as containerd's CRI plugin and CRI-O write it: the
/// runtime spec (with an environment holding a secret, which tcpkit must never show) and the annotations
/// each runtime adds (containerd: pkg/cri/annotations; CRI-O: pkg/annotations and kubelet's labels).
#[derive(Clone, Copy, PartialEq)]
pub enum Cri {
    Containerd,
    K3s,
    CriO,
}

impl HostRoot {
    /// Writes the spec of container `id` (`container` None: the pod's sandbox) where `cri` keeps it; returns
    /// its path.
    pub fn cri_spec(&self, cri: Cri, id: &str, namespace: &str, pod: &str, container: Option<&str>) -> PathBuf {
        let sandbox_id = "5a".repeat(32);
        let kind = if container.is_some() { "container" } else { "sandbox" };
        let annotations = match cri {
            Cri::Containerd | Cri::K3s => format!(
                r#""io.kubernetes.cri.container-type":"{kind}",{name}"io.kubernetes.cri.image-name":"docker.io/library/nginx:1.25","io.kubernetes.cri.sandbox-id":"{sandbox_id}","io.kubernetes.cri.sandbox-name":"{pod}","io.kubernetes.cri.sandbox-namespace":"{namespace}","io.kubernetes.cri.sandbox-uid":"{POD_UID}""#,
                name = container.map(|c| format!(r#""io.kubernetes.cri.container-name":"{c}","#)).unwrap_or_default(),
            ),
            Cri::CriO => format!(
                r#""io.container.manager":"cri-o","io.kubernetes.container.hash":"7a3c0f1e","io.kubernetes.container.name":"{name}","io.kubernetes.container.restartCount":"0","io.kubernetes.cri-o.ContainerID":"{id}","io.kubernetes.cri-o.ContainerType":"{kind}","io.kubernetes.cri-o.Labels":"{{\"io.kubernetes.container.name\":\"{name}\",\"io.kubernetes.pod.name\":\"{pod}\",\"io.kubernetes.pod.namespace\":\"{namespace}\",\"io.kubernetes.pod.uid\":\"{POD_UID}\"}}","io.kubernetes.cri-o.Name":"k8s_{name}_{pod}_{namespace}_{POD_UID}_0","io.kubernetes.cri-o.SandboxID":"{sandbox_id}","io.kubernetes.pod.name":"{pod}","io.kubernetes.pod.namespace":"{namespace}","io.kubernetes.pod.uid":"{POD_UID}""#,
                name = container.unwrap_or("POD"),
            ),
        };
        let spec = format!(
            r#"{{"ociVersion":"1.1.0","process":{{"user":{{"uid":0,"gid":0,"additionalGids":[0]}},"args":["nginx","-g","daemon off;"],"env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin","HOSTNAME={pod}","DB_PASSWORD=do-not-print-me"],"cwd":"/","capabilities":{{"bounding":["CAP_CHOWN","CAP_NET_BIND_SERVICE"],"effective":["CAP_CHOWN","CAP_NET_BIND_SERVICE"],"permitted":["CAP_CHOWN","CAP_NET_BIND_SERVICE"]}},"noNewPrivileges":false,"apparmorProfile":"cri-containerd.apparmor.d","oomScoreAdj":1000}},"root":{{"path":"rootfs"}},"hostname":"{pod}","mounts":[{{"destination":"/proc","type":"proc","source":"proc","options":["nosuid","noexec","nodev"]}},{{"destination":"/etc/hosts","type":"bind","source":"/var/lib/kubelet/pods/{POD_UID}/etc-hosts","options":["rbind","rprivate","rw"]}}],"annotations":{{{annotations}}},"linux":{{"resources":{{"devices":[{{"allow":false,"access":"rwm"}}],"memory":{{"limit":134217728}},"cpu":{{"shares":102,"period":100000}}}},"cgroupsPath":"kubepods-besteffort-pod{uid_}.slice:cri-containerd:{id}","namespaces":[{{"type":"pid"}},{{"type":"ipc","path":"/proc/4242/ns/ipc"}},{{"type":"uts","path":"/proc/4242/ns/uts"}},{{"type":"mount"}},{{"type":"network","path":"/proc/4242/ns/net"}}],"maskedPaths":["/proc/kcore"],"readonlyPaths":["/proc/sys"]}}}}"#,
            uid_ = POD_UID.replace('-', "_"),
        );
        let path = match cri {
            Cri::Containerd => format!("run/containerd/io.containerd.runtime.v2.task/k8s.io/{id}/config.json"),
            Cri::K3s => format!("run/k3s/containerd/io.containerd.runtime.v2.task/k8s.io/{id}/config.json"),
            Cri::CriO => format!("run/containers/storage/overlay-containers/{id}/userdata/config.json"),
        };
        self.write(&path, spec.as_bytes())
    }
}

impl Drop for HostRoot {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
