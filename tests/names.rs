//! Container and pod names from the node's own files (issue 25), under --host-root: containerd's and CRI-O's
//! OCI specs, kubelet's log directories and symlinks, docker's config.v2.json and podman's containers.json,
//! laid out here exactly as those programs write them (containerd's task bundles and CRI annotations,
//! CRI-O's userdata directory, kubelet's kuberuntime log layout, moby's container store, containers/storage's
//! container list: none of them runs on this machine), beside real cgroups named as each runtime names them,
//! each with a real process in it. The names must land on the right records, show in -C's column, select a
//! container with --container NAME, arrive on later lines when the files come after the first connection,
//! and a bad file must give no names and one warning, never a crash or a hang.
mod common;

use std::os::unix::fs::symlink;

use common::node::{Cri, HostRoot, POD_UID};
use common::*;

/// A container ID of this test process's own (`kind` in its first two digits): --container looks IDs up
/// over the whole cgroup tree, where another run's directories may be.
fn container_id(kind: u8) -> String {
    let mut id = format!("{:08x}", std::process::id()).repeat(8);
    id.replace_range(0..2, &format!("{kind:02x}"));
    id
}

/// A listening peer in a new cgroup below `base` at `layout`.
fn server_in(base: &Cgroup, layout: &str) -> (Cgroup, Peer) {
    let leaf = base.child(layout);
    let server = Peer::listen(&[], &["--count", "1000"]);
    leaf.add(server.pid);
    (leaf, server)
}

/// One connection to `server`, and its accept record from `tcpkit`.
fn accept_record(tcpkit: &mut Tcpkit, server: &mut Peer) -> serde_json::Value {
    let (c, cport) = connect(v4(server.port));
    server.expect_accepted(cport);
    drop(c);
    record(tcpkit, "accept", server.port, cport)
}

fn names_of(r: &serde_json::Value) -> [Option<&str>; 3] {
    [r["namespace"].as_str(), r["pod"].as_str(), r["container"].as_str()]
}

/// Removes a layout's directories, deepest first, once its tasks are gone.
fn remove_layout(leaf: Cgroup, base: &Cgroup) {
    wait_until_empty(leaf.path());
    let mut dir = leaf.path().to_path_buf();
    drop(leaf);
    while dir.pop() && dir != base.path() {
        let _ = std::fs::remove_dir(&dir);
    }
}

#[test]
fn records_and_the_column_name_kubernetes_docker_and_podman_containers() {
    let ids = [container_id(0xa1), container_id(0xd0), container_id(0x90), container_id(0x91)];
    let [kube_id, docker_id, podman_id, quadlet_id] = [&*ids[0], &*ids[1], &*ids[2], &*ids[3]];
    let root = HostRoot::new("names");
    let log = root.kubelet_pod("shop", "web-7d4b9-x2k", POD_UID, "nginx");
    root.kubelet_link("shop", "web-7d4b9-x2k", "nginx", kube_id, &log);
    root.docker(docker_id, "redis-cache");
    root.podman(&[(podman_id, "web-frontend"), (quadlet_id, "systemd-web")]);
    let uid_ = POD_UID.replace('-', "_");
    let base = Cgroup::new();
    let kube = format!(
        "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{uid_}.slice/cri-containerd-{kube_id}.scope"
    );
    let mut servers = vec![
        (server_in(&base, &kube), [Some("shop"), Some("web-7d4b9-x2k"), Some("nginx")], "shop/web-7d4b9-x2k/nginx"),
        (
            server_in(&base, &format!("system.slice/docker-{docker_id}.scope")),
            [None, None, Some("redis-cache")],
            "redis-cache",
        ),
        (
            server_in(&base, &format!("libpod_parent/libpod-{podman_id}")),
            [None, None, Some("web-frontend")],
            "web-frontend",
        ),
        // A quadlet unit: podman --cgroups=split puts the container below its service's cgroup.
        (
            server_in(&base, &format!("system.slice/web.service/libpod-payload-{quadlet_id}")),
            [None, None, Some("systemd-web")],
            "systemd-web",
        ),
    ];
    let ports: Vec<String> = servers.iter().map(|((_, s), _, _)| s.port.to_string()).collect();
    let ports = ports.join(",");
    let mut json = Tcpkit::start_json(&["accept", "--host-root", root.path(), "-P", &ports]);
    let mut column = Tcpkit::start(&["accept", "-C", "--host-root", root.path(), "-P", &ports]);
    let mut only_redis = Tcpkit::start_json(&["tracer", "--host-root", root.path(), "--container", "redis-cache"]);
    for ((_, server), names, label) in &mut servers {
        let r = accept_record(&mut json, server);
        assert_eq!(names_of(&r), *names, "{r}");
        assert!(r["container_id"].is_string(), "the IDs stay: {r}");
        if *label == "systemd-web" {
            assert_eq!((&r["container_id"], &r["unit"]), (&quadlet_id.into(), &"web.service".into()), "{r}");
        }
        let row = column.expect_line(&format!("the {label} row"), |l| l.starts_with(&format!("{} ", server.pid)));
        assert!(row.trim_end().ends_with(&format!(" {label}")), "the CONTAINER column: {row:?}");
        assert!(!json.stderr().contains("do-not-print-me") && !column.stderr().contains("do-not-print-me"));
    }
    // --container NAME kept the docker container's tasks only: its accept and close, none of the others'.
    let redis = format!("\"pid\":{},", servers[1].0 .1.pid);
    only_redis.expect_line("redis-cache's accept", |l| l.contains(&redis) && l.contains("\"type\":\"accept\""));
    let kept = only_redis.stop_and_collect();
    assert!(kept.iter().all(|l| l.contains(&redis) && l.contains("\"container\":\"redis-cache\"")), "{kept:#?}");
    assert_usage_error(&["tracer", "--host-root", root.path(), "--container", "no-such-name"], "has that name");
    assert_usage_error(
        &["tracer", "--host-root", "/nonexistent/root"],
        "--host-root /nonexistent/root: not a directory",
    );
    drop((json, column));
    for ((leaf, server), _, _) in servers {
        drop(server);
        remove_layout(leaf, &base);
    }
}

#[test]
fn names_written_after_the_first_connection_show_on_later_lines() {
    let id = container_id(0xa2);
    let kube_id = id.as_str();
    // Kubelet makes the symlink only once the container has started: its first connections find no names
    // (the pod is already known from its log directory), later ones find them all.
    let root = HostRoot::new("late-names");
    let log = root.kubelet_pod("shop", "late-1", POD_UID, "app");
    let base = Cgroup::new();
    let uid_ = POD_UID.replace('-', "_");
    let layout = format!("kubepods.slice/kubepods-pod{uid_}.slice/cri-containerd-{kube_id}.scope");
    let (leaf, mut server) = server_in(&base, &layout);
    let mut tcpkit = Tcpkit::start_json(&["accept", "--host-root", root.path(), "-P", &server.port.to_string()]);
    let first = accept_record(&mut tcpkit, &mut server);
    assert_eq!(names_of(&first), [Some("shop"), Some("late-1"), None], "the pod before its symlink: {first}");
    root.kubelet_link("shop", "late-1", "app", kube_id, &log);
    // Looked for again at most once a second: a later connection has them.
    let mut later = first;
    wait_until("the names on a later accept", || {
        later = accept_record(&mut tcpkit, &mut server);
        later["container"].is_string()
    });
    assert_eq!(names_of(&later), [Some("shop"), Some("late-1"), Some("app")], "{later}");
    drop(tcpkit);
    drop(server);
    remove_layout(leaf, &base);
}

#[test]
fn bad_name_files_give_no_names_and_one_warning_each() {
    // Docker containers whose config.v2.json is each wrong in its own way, and a podman list too large:
    // each record has no container name, stderr says once per file what is wrong, and tcpkit goes on.
    let root = HostRoot::new("bad-names");
    let id = |n: u8| format!("{:x}", n).repeat(64);
    let config = |n: u8| format!("var/lib/docker/containers/{}/config.v2.json", id(n));
    root.write(&config(1), br#"{"ID":"x","Name":"/trunc"#);
    root.write(&config(2), b"{\"Name\":\"/non-utf8-\xff\xfe\"}");
    root.write(&config(3), &[b'['; 100_000]);
    root.write(&config(4), format!(r#"{{"Name":"/{}"}}"#, "x".repeat(2 << 20)).as_bytes());
    root.write(&config(5), "{\"Name\":\"/evil\\u001b[31mred\"}".as_bytes());
    let fifo = root.0.join(config(6));
    std::fs::create_dir_all(fifo.parent().unwrap()).unwrap();
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let looped = root.0.join(config(7));
    std::fs::create_dir_all(looped.parent().unwrap()).unwrap();
    symlink(&looped, &looped).unwrap();
    let base = Cgroup::new();
    let (leaf, mut server) = server_in(&base, "bad");
    let mut tcpkit = Tcpkit::start_json(&["accept", "--host-root", root.path(), "-P", &server.port.to_string()]);
    let mut warned = Vec::new();
    for n in 1..=7 {
        // The same server moved into each container's cgroup (cgroupfs layout: docker/<id>) in turn.
        let cgroup = base.child(&format!("docker/{}", id(n)));
        cgroup.add(server.pid);
        for _ in 0..2 {
            let r = accept_record(&mut tcpkit, &mut server);
            assert_eq!((r["container_id"].as_str(), names_of(&r)), (Some(&*id(n)), [None, None, None]), "{r}");
        }
        leaf.add(server.pid);
        warned.push(cgroup);
    }
    let stderr = tcpkit.stderr();
    for (n, why) in [
        (1, "not valid JSON (truncated)"),
        (2, "not valid JSON"),
        (3, "not valid JSON"),
        (4, "larger than 1024 kB"),
        (5, "a name with unexpected characters"),
        (6, "not a regular file"),
        (7, "cannot be opened"),
    ] {
        let path = root.0.join(config(n)).display().to_string();
        let lines: Vec<&str> = stderr.lines().filter(|l| l.contains(&path)).collect();
        assert_eq!(lines.len(), 1, "one warning for {path}: {stderr}");
        assert!(lines[0].contains(why) && lines[0].starts_with("tcpkit: warning: "), "{}", lines[0]);
    }
    assert!(!stderr.contains('\u{1b}'), "nothing from the files themselves: {stderr:?}");
    drop(tcpkit);
    drop(server);
    drop(warned);
    remove_layout(leaf, &base);
    let _ = std::fs::remove_dir(base.path().join("docker"));
}

#[test]
fn cri_runtimes_name_their_containers_from_their_specs_and_a_deleted_bundle_keeps_them() {
    // No kubelet symlinks here: each container's OCI spec alone names it, as containerd (systemd cgroup
    // driver), k3s's containerd (cgroupfs driver, whose cgroup names no runtime) and CRI-O keep it, and a
    // pod's sandbox has its pod's names and no container name.
    let root = HostRoot::new("cri-names");
    let uid_ = POD_UID.replace('-', "_");
    let pod_slice = format!("kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{uid_}.slice");
    let cases = [
        (Cri::Containerd, Some("nginx"), format!("{pod_slice}/cri-containerd-{{id}}.scope"), 0xc1),
        (Cri::Containerd, None, format!("{pod_slice}/cri-containerd-{{id}}.scope"), 0xc2),
        (Cri::K3s, Some("traefik"), format!("kubepods/burstable/pod{POD_UID}/{{id}}"), 0xc3),
        (Cri::CriO, Some("redis"), format!("{pod_slice}/crio-{{id}}.scope"), 0xc4),
        (Cri::CriO, None, format!("{pod_slice}/crio-{{id}}.scope"), 0xc5),
    ];
    let base = Cgroup::new();
    let mut servers = Vec::new();
    for (cri, container, layout, kind) in &cases {
        let id = container_id(*kind);
        let spec = root.cri_spec(*cri, &id, "shop", "web-7d4b9-x2k", *container);
        let (leaf, server) = server_in(&base, &layout.replace("{id}", &id));
        servers.push((leaf, server, *container, spec));
    }
    let ports: Vec<String> = servers.iter().map(|(_, s, _, _)| s.port.to_string()).collect();
    let ports = ports.join(",");
    let mut json = Tcpkit::start_json(&["tracer", "--host-root", root.path(), "-P", &ports]);
    let mut column = Tcpkit::start(&["accept", "-C", "--host-root", root.path(), "-P", &ports]);
    for (_, server, container, _) in &mut servers {
        let r = accept_record(&mut json, server);
        assert_eq!(names_of(&r), [Some("shop"), Some("web-7d4b9-x2k"), *container], "{r}");
        let label = match container {
            Some(c) => format!("shop/web-7d4b9-x2k/{c}"),
            None => "shop/web-7d4b9-x2k".to_string(),
        };
        let row = column.expect_line(&format!("the {label} row"), |l| l.starts_with(&format!("{} ", server.pid)));
        assert!(row.trim_end().ends_with(&format!(" {label}")), "the CONTAINER column: {row:?}");
    }
    assert!(!json.stderr().contains("do-not-print-me") && !column.stderr().contains("do-not-print-me"));
    assert!(!json.stderr().contains("warning"), "no warning: {}", json.stderr());
    drop(column);

    // containerd deletes the bundle when the task exits; a connection still open then closes later, and
    // its close keeps the names tcpkit read (names are looked for again at most once a second).
    let (leaf, server, _, spec) = servers.remove(0);
    drop(server);
    let mut holder = Peer::listen(&[], &["--end", "hold"]);
    leaf.add(holder.pid);
    let (c, cport) = connect(v4(holder.port));
    holder.expect_accepted(cport);
    let mut tracer = Tcpkit::start_json(&["tracer", "--host-root", root.path(), "-P", &holder.port.to_string()]);
    let (c2, cport2) = connect(v4(holder.port));
    holder.expect_accepted(cport2);
    let a = record(&mut tracer, "accept", holder.port, cport2);
    assert_eq!(names_of(&a), [Some("shop"), Some("web-7d4b9-x2k"), Some("nginx")], "{a}");
    std::fs::remove_dir_all(spec.parent().unwrap()).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    holder.release();
    drop((c, c2)); // the clients close too: a close record comes when the connection has ended
                   // The two closes come in either order.
    let closes = tracer.expect_all(
        "both closes",
        &[&json_event("close", holder.port, cport), &json_event("close", holder.port, cport2)],
    );
    for line in closes {
        let x: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(names_of(&x), [Some("shop"), Some("web-7d4b9-x2k"), Some("nginx")], "{x}");
    }
    drop((tracer, json));
    holder.wait_exit();
    remove_layout(leaf, &base);
    for (leaf, server, _, _) in servers {
        drop(server);
        remove_layout(leaf, &base);
    }
}

/// A pod UID of this test process's own (`n` at its end): --pod and --namespace look pods' directories up
/// over the whole cgroup tree, where another test's may be.
fn pod_uid(n: u8) -> String {
    format!("{:08x}-0000-4000-8000-{n:012x}", std::process::id())
}

#[test]
fn pod_and_namespace_filters_keep_exactly_their_pods_tasks_and_follow_new_pods() {
    // Three pods, as kubelet leaves them: a log directory each, and a cgroup (systemd driver for two,
    // cgroupfs for the third) with a container and a server in it. web-1 is a name in two namespaces.
    let root = HostRoot::new("pod-filter");
    let base = Cgroup::new();
    let pod = |n: u8, namespace: &str, name: &str, systemd: bool| {
        let uid = pod_uid(n);
        root.kubelet_pod(namespace, name, &uid, "app");
        let id = container_id(0xb0 + n);
        let layout = if systemd {
            let uid_ = uid.replace('-', "_");
            format!(
                "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{uid_}.slice/cri-containerd-{id}.scope"
            )
        } else {
            format!("kubepods/besteffort/pod{uid}/{id}")
        };
        server_in(&base, &layout)
    };
    let mut pods = vec![pod(1, "shop", "web-1", true), pod(2, "shop", "web-2", false), pod(3, "other", "web-1", true)];
    let ports: Vec<String> = pods.iter().map(|(_, s)| s.port.to_string()).collect();
    let ports = ports.join(",");
    let host = ["--host-root", root.path()];
    let one =
        Tcpkit::start_json(&[&["tracer", "--pod", "web-1", "--namespace", "shop", "-P", &ports][..], &host].concat());
    let mut shop = Tcpkit::start_json(&[&["accept", "--namespace", "shop"][..], &host].concat());
    // Every pod is busy; each tcpkit shows its pods' lines only.
    for (_, server) in &mut pods {
        let (c, cport) = connect(v4(server.port));
        server.expect_accepted(cport);
        drop(c);
    }
    // A pod made after tcpkit started joins --namespace's set within a second or so.
    pods.push(pod(4, "shop", "web-3", false));
    let late = &mut pods[3].1;
    let mut tried = Vec::new();
    wait_until("the new pod's accept under --namespace", || {
        let (c, cport) = connect(v4(late.port));
        late.expect_accepted(cport);
        drop(c);
        tried.push(cport);
        // An accept of any try counts, however late its line comes.
        let lport = late.port;
        let any_try = |l: &str| tried.iter().any(|&p| json_event("accept", lport, p)(l));
        shop.line_within(std::time::Duration::from_millis(300), any_try).is_some()
            || shop.stdout.seen.iter().any(|l| any_try(l))
    });
    let pid = |i: usize| format!("\"pid\":{},", pods[i].1.pid);
    let kept = one.stop_and_collect();
    assert!(kept.iter().any(|l| l.contains(&pid(0)) && l.contains("\"type\":\"accept\"")), "{kept:#?}");
    assert!(kept.iter().all(|l| l.contains(&pid(0))), "--pod web-1 --namespace shop: {kept:#?}");
    let kept = shop.stop_and_collect();
    for i in [0, 1] {
        assert!(kept.iter().any(|l| l.contains(&pid(i))), "pod {i} under --namespace shop: {kept:#?}");
    }
    assert!(kept.iter().all(|l| !l.contains(&pid(2))), "another namespace's pod: {kept:#?}");
    assert_usage_error(&[&["tracer", "--pod", "web-1"][..], &host].concat(), "namespaces other, shop; add --namespace");
    assert_usage_error(&[&["tracer", "--pod", "nope", "--namespace", "shop"][..], &host].concat(), "no such pod");
    assert_usage_error(&[&["tracer", "--namespace", "nope"][..], &host].concat(), "--namespace nope: no such pod");
    assert_usage_error(&[&["tracer", "--pod", "Web_1"][..], &host].concat(), "not a Kubernetes name");
    assert_usage_error(&["tracer", "--pod", "web-1", "--container", "x"], "cannot be used with");
    for (leaf, server) in pods {
        drop(server);
        remove_layout(leaf, &base);
    }
}

#[test]
fn a_container_gone_before_its_events_are_printed_is_still_named() {
    // A short-lived container (`podman run --rm`, a Kubernetes Job) can be gone, cgroup and all, before
    // tcpkit prints its events; the kernel's record of each cgroup made names it anyway. Both tcpkits are
    // stopped (SIGSTOP) while the container is made, connects, ends and is removed, so that they read its
    // events only once its cgroup is gone.
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    let root = HostRoot::new("gone");
    let id = container_id(0xe1);
    root.docker(&id, "short-lived");
    let base = Cgroup::new();
    let mut server = Peer::listen(&[], &[]);
    let port = server.port.to_string();
    let host = ["--host-root", root.path()];
    let mut json = Tcpkit::start_json(&[&["tracer", "-P", &port][..], &host].concat());
    let mut text = Tcpkit::start_with_header_lines(&[&["tracer", "-C", "-P", &port][..], &host].concat(), 2);
    let pause = |signal| {
        for pid in [json.pid(), text.pid()] {
            kill(Pid::from_raw(pid as i32), signal).unwrap();
        }
    };
    pause(Signal::SIGSTOP);
    let leaf = base.child(&format!("docker/{id}"));
    let mut client = Peer::spawn(&["--wait"], "connect", &["--addr", &v4(server.port).to_string()]);
    leaf.add(client.pid);
    client.go();
    let cport = client_port(&mut client);
    server.expect_accepted(cport);
    client.wait_exit();
    let cgroup = format!("/{}", leaf.path().strip_prefix(cgroup2_root()).unwrap().display());
    remove_layout(leaf, &base);
    let _ = std::fs::remove_dir(base.path().join("docker"));
    pause(Signal::SIGCONT);
    for kind in ["connect", "close"] {
        let r = record(&mut json, kind, cport, server.port);
        assert_eq!(r["cgroup"], cgroup.as_str(), "{r}");
        assert_eq!((r["container_id"].as_str(), r["container"].as_str()), (Some(&*id), Some("short-lived")), "{r}");
    }
    let row = text.expect_line("the client's C row", |l| l.starts_with("C ") && l.contains(&format!(" {cport} ")));
    assert!(row.trim_end().ends_with(" short-lived"), "{row:?}");
}

/// The client's local port, from its `connected` report.
fn client_port(client: &mut Peer) -> u16 {
    let line = client.out.find(DEADLINE, |l| l.starts_with("connected ")).expect("the client connected");
    line.split(' ').nth(1).unwrap().parse().unwrap()
}
