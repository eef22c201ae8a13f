//! Compiles each BPF object in src/bpf/ into a libbpf-rs skeleton in OUT_DIR, and records the git commit
//! for --version.
use std::env;
use std::path::PathBuf;
use std::process::Command;

use libbpf_cargo::SkeletonBuilder;

const OBJECTS: &[&str] = &["accept", "tracer", "metrics"];

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let mut clang_args = vec!["-Wall", "-Wno-unused-function", "-O2", "-g"];
    // The benchmark's floor build (scripts/bench.sh --floor): see floor_event in src/bpf/filter.bpf.h.
    if env::var_os("CARGO_FEATURE_BENCH_FLOOR").is_some() {
        clang_args.push("-DTCPKIT_FLOOR");
    }
    for name in OBJECTS {
        let src = format!("src/bpf/{name}.bpf.c");
        SkeletonBuilder::new()
            .source(&src)
            .clang_args(&clang_args)
            .build_and_generate(out.join(format!("{name}.skel.rs")))
            .unwrap_or_else(|e| panic!("building {src}: {e:#}"));
    }
    println!("cargo:rerun-if-changed=src/bpf");

    let commit = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|| "unknown commit".into());
    println!("cargo:rustc-env=TCPKIT_GIT_COMMIT={commit}");
    println!("cargo:rerun-if-changed=.git/HEAD");
    println!("cargo:rerun-if-changed=.git/refs/heads");
}
