//! tcpkit as fleets run it: from its own image (scripts/image.sh), in a container with exactly the privileges
//! and mounts of deploy/tcpkit-daemonset.yaml, naming a connection made inside another container. Real
//! podman (with runc: crun refuses hybrid cgroup hierarchies), real containers, real cgroups.
mod common;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use nix::sys::signal::Signal;
use serde_json::Value;
use yaml_rust2::{Yaml, YamlLoader};

const MANIFEST: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/tcpkit-daemonset.yaml");
const METRICS_MANIFEST: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/tcpkit-metrics-daemonset.yaml");
/// Raising rlimits is refused on some hosts (this one among them); podman's defaults would raise them.
const ULIMITS: [&str; 4] = ["--ulimit", "nofile=1024:4096", "--ulimit", "nproc=1024:4096"];

fn project(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn podman() -> Command {
    let mut cmd = Command::new("podman");
    cmd.args(["--runtime", "runc"]);
    cmd
}

/// Runs a command to its end; panics with its stderr if it fails. Returns its stdout, trimmed.
fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e} (scripts/test.sh installs podman and runc)"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{cmd:?}: {}\n{stderr}", out.status);
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A container removed when the test ends, however it ends.
struct Container(String);

impl Drop for Container {
    fn drop(&mut self) {
        let _ = podman().args(["rm", "--force", "--time", "0", &self.0]).output();
    }
}

/// What the DaemonSet's pod template asks for, as podman run flags, and the container's arguments.
struct PodTemplate {
    run_flags: Vec<String>,
    args: Vec<String>,
    image: String,
}

fn manifest() -> Yaml {
    let mut docs = manifest_documents(MANIFEST);
    assert_eq!(docs.len(), 1, "one document");
    docs.remove(0)
}

fn manifest_documents(path: &str) -> Vec<Yaml> {
    let text = std::fs::read_to_string(path).expect("reading the manifest");
    YamlLoader::load_from_str(&text).expect("the manifest is not valid YAML")
}

fn strings(y: &Yaml) -> Vec<String> {
    y.as_vec().map(|v| v.iter().filter_map(|s| s.as_str().map(String::from)).collect()).unwrap_or_default()
}

/// Translates the pod template into podman's terms; panics on anything in it this translation does not know,
/// so a field added to the manifest is either checked here or noticed.
fn pod_template(ds: &Yaml) -> PodTemplate {
    let pod = &ds["spec"]["template"]["spec"];
    let containers = pod["containers"].as_vec().expect("containers");
    assert_eq!(containers.len(), 1, "one container");
    let c = &containers[0];
    let mut flags: Vec<String> = Vec::new();
    if pod["hostPID"].as_bool() == Some(true) {
        flags.push("--pid=host".into());
    }
    let sc = &c["securityContext"];
    assert_ne!(sc["privileged"].as_bool(), Some(true), "the manifest should not need privileged");
    for cap in strings(&sc["capabilities"]["drop"]) {
        flags.push(format!("--cap-drop={cap}"));
    }
    for cap in strings(&sc["capabilities"]["add"]) {
        flags.push(format!("--cap-add={cap}"));
    }
    match sc["seccompProfile"]["type"].as_str() {
        Some("Unconfined") => flags.push("--security-opt=seccomp=unconfined".into()),
        Some(other) => panic!("seccompProfile {other}: not translated"),
        None => {}
    }
    if sc["readOnlyRootFilesystem"].as_bool() == Some(true) {
        flags.push("--read-only".into());
    }
    let volumes = pod["volumes"].as_vec().expect("volumes");
    for mount in c["volumeMounts"].as_vec().expect("volumeMounts") {
        let name = mount["name"].as_str().unwrap();
        let volume = volumes.iter().find(|v| v["name"].as_str() == Some(name)).unwrap_or_else(|| panic!("{name}"));
        let host = volume["hostPath"]["path"].as_str().unwrap_or_else(|| panic!("{name} is not a hostPath"));
        assert!(Path::new(host).is_dir(), "hostPath {host} of volume {name} is not a directory here");
        let ro = if mount["readOnly"].as_bool() == Some(true) { ":ro" } else { "" };
        flags.push(format!("--volume={host}:{}{ro}", mount["mountPath"].as_str().unwrap()));
    }
    let image = c["image"].as_str().expect("image").to_string();
    PodTemplate { run_flags: flags, args: strings(&c["args"]), image }
}

#[test]
fn the_daemonset_manifest_runs_tcpkit_tracer_json_on_every_node() {
    let ds = manifest();
    assert_eq!(ds["apiVersion"].as_str(), Some("apps/v1"));
    assert_eq!(ds["kind"].as_str(), Some("DaemonSet"));
    let labels = &ds["spec"]["template"]["metadata"]["labels"];
    for (key, value) in ds["spec"]["selector"]["matchLabels"].as_hash().expect("a selector") {
        assert_eq!(&labels[key.as_str().unwrap()], value, "the selector must match the pod template's labels");
    }
    let template = pod_template(&ds);
    assert_eq!(template.image, format!("tcpkit:{}", env!("CARGO_PKG_VERSION")), "the image scripts/image.sh tags");
    assert_eq!(&template.args[..3], ["tracer", "-o", "json"], "JSON lines on stdout");
    // The arguments are tcpkit's: it accepts them (a usage error would exit 2 before loading anything).
    let mut args: Vec<&str> = template.args.iter().map(String::as_str).collect();
    args.push("--help");
    let (status, _, stderr) = run_tcpkit(&args);
    assert!(status.success(), "{stderr}");
    for needed in ["--pid=host", "--cap-add=BPF", "--cap-add=PERFMON", "--volume=/sys/fs/cgroup:/sys/fs/cgroup:ro"] {
        assert!(template.run_flags.iter().any(|f| f == needed), "{needed} missing: {:?}", template.run_flags);
    }
}

#[test]
fn tcpkit_in_its_image_names_the_podman_container_of_a_connection() {
    require_root();
    let version = Command::new("podman").arg("--version").output();
    assert!(
        version.is_ok_and(|o| o.status.success()),
        "this test runs real containers and needs podman and runc: apt-get install podman runc"
    );
    let image = run(Command::new(project("scripts/image.sh")).arg("tcpkit:test"));
    let peer_image = peer_image();
    let template = pod_template(&manifest());

    // A server in a container of its own, with only a loopback network.
    let peer_name = format!("tcpkit-test-peer-{}", std::process::id());
    let peer_guard = Container(peer_name.clone());
    let mut listen = podman();
    listen.args(["run", "--rm", "-i", "--name", &peer_name, "--network", "none"]).args(ULIMITS);
    // --hold: the server outlives the client's exec session (its exit would stop the container and kill that
    // session before the client says it is done).
    listen.args([&peer_image, "--hold", "listen", "--count", "1"]);
    let mut server = Peer::spawn_command(listen, true);
    let inspect = run(podman().args(["inspect", "--format", "{{.Id}} {{.State.Pid}}", &peer_name]));
    let (id, host_pid) = inspect.split_once(' ').expect("podman inspect");
    let host_pid: u32 = host_pid.parse().unwrap();
    let cgroup = std::fs::read_to_string(format!("/proc/{host_pid}/cgroup")).unwrap();
    let cgroup = cgroup.lines().find_map(|l| l.strip_prefix("0::")).expect("a cgroup v2 line").to_string();
    assert!(cgroup.contains(id), "the container's cgroup {cgroup} does not name it");
    let cgroup_id = std::fs::metadata(format!("/sys/fs/cgroup{cgroup}")).map(|m| m.ino()).ok();

    // tcpkit from its image, with the DaemonSet's privileges and mounts, following that container only.
    let tcpkit_name = format!("tcpkit-test-tracer-{}", std::process::id());
    let _tcpkit_guard = Container(tcpkit_name.clone());
    let mut cmd = podman();
    cmd.args(["run", "--rm", "--name", &tcpkit_name]).args(ULIMITS).args(&template.run_flags);
    cmd.arg(&image).args(&template.args).args(["--container", &id[..12], "--debug", "--backend", &test_backend()]);
    let mut tcpkit = Tcpkit::start_json_command(cmd);

    // A client in the same container: podman exec runs it in the container's cgroup and namespaces.
    let mut exec = podman();
    exec.args(["exec", "-i", &peer_name, "/tcpkit-peer", "connect", "--addr", &format!("127.0.0.1:{}", server.port)]);
    let mut client = Peer::spawn_command(exec, false);
    client.wait_done();
    server.wait_done();
    tcpkit.expect_line("the close of the server's side", |l| {
        l.contains("\"type\":\"close\"") && l.contains("\"end\":\"peer\"")
    });
    let mut lines = std::mem::take(&mut tcpkit.stdout.seen);
    let (status, rest, tcpkit_stderr) = tcpkit.stop_with(Signal::SIGTERM);
    lines.extend(rest);
    assert_eq!(status.code(), Some(0), "tcpkit in its container did not end cleanly on SIGTERM: {tcpkit_stderr}");
    drop(peer_guard);

    // The same with the runtime's default seccomp profile: refused, and the message names the fix.
    let mut refused = podman();
    refused.args(["run", "--rm"]).args(ULIMITS);
    refused.args(template.run_flags.iter().filter(|f| !f.starts_with("--security-opt=seccomp")));
    let out = refused.arg(&image).args(["tracer", "-d", "1"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("run tcpkit with seccomp unconfined"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");

    let seen: Vec<Value> = tcpkit_lines(lines);
    let kinds: Vec<&str> = seen.iter().map(|r| r["type"].as_str().unwrap()).collect();
    for kind in ["connect", "accept", "close"] {
        assert!(kinds.contains(&kind), "no {kind} record: {seen:#?}");
    }
    for record in &seen {
        assert_eq!(
            record["container_id"], *id,
            "{record}; the container's cgroup has id {cgroup_id:?}\n{tcpkit_stderr}"
        );
        assert_eq!(record["container_runtime"], "podman", "{record}");
        assert_eq!(record["cgroup"], cgroup.as_str(), "{record}");
        assert_eq!(record["comm"], "tcpkit-peer", "{record}");
        assert_eq!(record["netns"], server.netns, "{record}");
        assert!(record["lport"] == server.port || record["rport"] == server.port, "{record}");
    }
    let accept = seen.iter().find(|r| r["type"] == "accept").unwrap();
    assert_eq!(accept["pid"], host_pid, "the accepting server's PID as the host sees it: {accept}");
}

#[test]
fn the_metrics_daemonset_is_the_tracers_pod_with_a_scraped_port_and_serves_what_the_kernel_counted() {
    require_root();
    let docs = manifest_documents(METRICS_MANIFEST);
    assert_eq!(docs.len(), 2, "a DaemonSet and a PodMonitor");
    let (ds, monitor) = (&docs[0], &docs[1]);
    assert_eq!((ds["kind"].as_str(), monitor["kind"].as_str()), (Some("DaemonSet"), Some("PodMonitor")));
    assert_eq!(monitor["apiVersion"].as_str(), Some("monitoring.coreos.com/v1"));
    let pod = &ds["spec"]["template"];
    assert_eq!(
        monitor["spec"]["selector"]["matchLabels"], ds["spec"]["selector"]["matchLabels"],
        "the PodMonitor selects the DaemonSet's pods"
    );
    assert_eq!(ds["spec"]["selector"]["matchLabels"], pod["metadata"]["labels"]);
    let container = &pod["spec"]["containers"][0];
    let port = &container["ports"][0];
    assert_eq!((port["name"].as_str(), port["containerPort"].as_i64()), (Some("metrics"), Some(10070)));
    assert_eq!(monitor["spec"]["podMetricsEndpoints"][0]["port"].as_str(), Some("metrics"));
    let annotations = &pod["metadata"]["annotations"];
    assert_eq!(annotations["prometheus.io/scrape"].as_str(), Some("true"));
    assert_eq!(annotations["prometheus.io/port"].as_str(), Some("10070"));
    let template = pod_template(ds);
    assert_eq!(&template.args[..3], ["metrics", "--listen", "0.0.0.0:10070"], "{:?}", template.args);
    // The same privileges, mounts and image as the tracer's DaemonSet: only what it runs differs.
    let tracer = pod_template(&manifest());
    assert_eq!((&template.run_flags, &template.image), (&tracer.run_flags, &tracer.image));

    // Run as the manifest says, in the network namespace of a pod of its own (a peer container's, as a
    // pod's pause container holds it), following that namespace only (-N; the node's other connections
    // count too otherwise), with -P naming a port nothing uses: every port is "other".
    let image = run(Command::new(project("scripts/image.sh")).arg("tcpkit:test"));
    let peer_image = peer_image();
    let pod_name = format!("tcpkit-test-metrics-pod-{}", std::process::id());
    let _pod_guard = Container(pod_name.clone());
    let mut listen = podman();
    listen.args(["run", "--rm", "-i", "--name", &pod_name, "--network", "none"]).args(ULIMITS);
    listen.args([&peer_image, "--hold", "listen", "--count", "1", "--end", "drain"]);
    let mut server = Peer::spawn_command(listen, true);
    let pid: u32 = run(podman().args(["inspect", "--format", "{{.State.Pid}}", &pod_name])).parse().unwrap();
    let netns = std::fs::metadata(format!("/proc/{pid}/ns/net")).unwrap().ino().to_string();
    let name = format!("tcpkit-test-metrics-{}", std::process::id());
    let _guard = Container(name.clone());
    let mut cmd = podman();
    cmd.args(["run", "--rm", "--name", &name, "--network", &format!("container:{pod_name}")]).args(ULIMITS);
    cmd.args(&template.run_flags).arg(&image).args(&template.args);
    cmd.args(["-N", &netns, "-P", "7", "--debug", "--backend", &test_backend()]);
    let tcpkit = Tcpkit::start_json_command(cmd);
    // A client in the pod's network namespace (a thread of this test that entered it), then scrapes there.
    let port = server.port;
    let client = std::thread::spawn(move || {
        let ns = std::fs::File::open(format!("/proc/{pid}/ns/net")).unwrap();
        nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET).expect("entering the pod's netns");
        drop(std::net::TcpStream::connect(("127.0.0.1", port)).expect("connecting to the peer"));
        let deadline = std::time::Instant::now() + DEADLINE;
        loop {
            let mut s = std::net::TcpStream::connect("127.0.0.1:10070").expect("the metrics port in the pod");
            std::io::Write::write_all(&mut s, b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
            let mut body = String::new();
            std::io::Read::read_to_string(&mut s, &mut body).unwrap();
            if body.contains(r#"direction="in",port="other",end="peer"} 1"#) || std::time::Instant::now() > deadline {
                return body;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    });
    server.wait_done();
    let body = client.join().unwrap();
    assert!(body.starts_with("HTTP/1.1 200 OK"), "{body}");
    // The scrapes themselves are connections to port 10070 in the pod: "other" as well, so only the peer's
    // and the client's ends are counted exactly, by their end.
    for series in [
        r#"direction="out",port="other",end="close"} 1"#,
        r#"direction="in",port="other",end="peer"} 1"#,
        r#"tcpkit_build_info{version=""#,
    ] {
        assert!(body.contains(series), "{series} missing:\n{body}");
    }
    let (status, _, stderr) = tcpkit.stop_with(Signal::SIGTERM);
    assert_eq!(status.code(), Some(0), "tcpkit metrics in its container did not end cleanly: {stderr}");
    server.release();
}

/// JSON records from tcpkit's output lines.
fn tcpkit_lines(lines: Vec<String>) -> Vec<Value> {
    lines.iter().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"))).collect()
}

/// An image holding only the static test peer, so the other container has nothing of the host in it.
/// The peer's image, built once per test process (tests run in parallel, and each build uses one directory).
fn peer_image() -> String {
    static IMAGE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    IMAGE.get_or_init(build_peer_image).clone()
}

fn build_peer_image() -> String {
    let bin = run(Command::new(project("scripts/build-static.sh")).arg("tcpkit-peer"));
    let context = std::env::temp_dir().join(format!("tcpkit-peer-image-{}", std::process::id()));
    std::fs::create_dir_all(&context).unwrap();
    std::fs::copy(project(&bin), context.join("tcpkit-peer")).unwrap();
    std::fs::write(
        context.join("Containerfile"),
        "FROM scratch\nCOPY tcpkit-peer /tcpkit-peer\nENTRYPOINT [\"/tcpkit-peer\"]\n",
    )
    .unwrap();
    let tag = "tcpkit-peer:test".to_string();
    run(podman().args(["build", "--quiet", "--tag", &tag]).arg(&context));
    let _ = std::fs::remove_dir_all(&context);
    tag
}

#[test]
fn podman_containers_show_by_name_are_selected_by_name_and_a_rename_shows_on_later_lines() {
    // A real podman container started with --name: tcpkit on the host reads the name from podman's own
    // containers.json (under --host-root, here the default /), selects the container by it, and shows a
    // `podman rename` on later lines (docker and podman names are read again every 5 seconds).
    require_root();
    let peer_image = peer_image();
    let name = format!("tcpkit-test-named-{}", std::process::id());
    let renamed = format!("tcpkit-test-renamed-{}", std::process::id());
    let _guard = Container(name.clone());
    let _renamed_guard = Container(renamed.clone());
    let mut listen = podman();
    listen.args(["run", "--rm", "-i", "--name", &name, "--network", "none"]).args(ULIMITS);
    listen.args([&peer_image, "--hold", "listen", "--count", "1000"]);
    let server = Peer::spawn_command(listen, true);
    let id = run(podman().args(["inspect", "--format", "{{.Id}}", &name]));
    let mut json = Tcpkit::start_json(&["tracer", "--container", &name]);
    let mut column = common::tracer::start(&["-C", "--container", &name]);
    // A client in the container: its connect, the server's accept and both closes are all the container's.
    let connect_inside = || {
        let addr = format!("127.0.0.1:{}", server.port);
        let mut exec = podman();
        exec.args(["exec", "-i", &id, "/tcpkit-peer", "connect", "--addr", &addr]);
        let mut client = Peer::spawn_command(exec, false);
        let (cport, _) = common::tracer::reported(&mut client, "connected", 1)[0];
        client.wait_done();
        cport
    };
    let cport = connect_inside();
    let accept = record(&mut json, "accept", server.port, cport);
    assert_eq!(accept["container"], name.as_str(), "{accept}");
    assert_eq!(accept["container_runtime"], "podman", "{accept}");
    let row = column.expect_line("the accept row", |l| l.starts_with("A ") && l.contains(&format!(" {cport} ")));
    assert!(row.trim_end().ends_with(&format!(" {name}")), "the CONTAINER column: {row:?}");

    run(podman().args(["rename", &name, &renamed]));
    let mut later = accept;
    wait_until("the new name on a later accept", || {
        let cport = connect_inside();
        later = record(&mut json, "accept", server.port, cport);
        later["container"] == renamed.as_str()
    });
    // Only the container's tasks, under both names: nothing from the host or another container.
    let kept = json.stop_and_collect();
    let records = tcpkit_lines(kept);
    assert!(records.iter().all(|r| r["container_id"] == id.as_str()), "{records:#?}");
    drop(column);
    drop(server);
}
