//! The man pages against the binary: every flag `--help` shows is in the page, every flag the page names
//! exists, and each page renders with no warnings. Host only (the qemu guests have no man); no BPF.
mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use common::*;

/// Long (`--x`) and short (`-x`) flags in `tcpkit ARGS --help`.
fn help_flags(args: &[&str]) -> (BTreeSet<String>, BTreeSet<String>) {
    let (status, out, err) = run_tcpkit(&[args, &["--help"]].concat());
    assert!(status.success(), "{args:?} --help: {err}");
    let (mut long, mut short) = (BTreeSet::new(), BTreeSet::new());
    for line in out.lines().map(str::trim_start).filter(|l| l.starts_with('-')) {
        let spec = line.split("  ").next().unwrap_or("");
        for word in spec.split([',', ' ']).filter(|w| w.starts_with('-')) {
            if word.starts_with("--") {
                long.insert(word.to_string());
            } else {
                short.insert(word.to_string());
            }
        }
    }
    (long, short)
}

/// Long flags a roff page names: `\-\-name` sequences.
fn page_long_flags(page: &str) -> BTreeSet<String> {
    let text = page.replace("\\-", "-");
    let mut flags = BTreeSet::new();
    for (i, _) in text.match_indices("--") {
        let name: String = text[i + 2..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '-').collect();
        if !name.is_empty() {
            flags.insert(format!("--{name}"));
        }
    }
    flags
}

fn read_page(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("man").join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn every_flag_of_each_command_is_in_its_page_and_back() {
    for (page, args) in [
        ("tcpkit-accept.8", &["accept"][..]),
        ("tcpkit-tracer.8", &["tracer"][..]),
        ("tcpkit-metrics.8", &["metrics"][..]),
    ] {
        let text = read_page(page);
        let (long, short) = help_flags(args);
        let in_page = page_long_flags(&text);
        let missing: Vec<&String> = long.iter().filter(|f| !in_page.contains(*f)).collect();
        assert!(missing.is_empty(), "{page} lacks {missing:?}");
        let unknown: Vec<&String> = in_page.iter().filter(|f| !long.contains(*f)).collect();
        assert!(unknown.is_empty(), "{page} names flags tcpkit {args:?} does not have: {unknown:?}");
        for flag in &short {
            assert!(text.contains(&flag.replace('-', "\\-")), "{page} lacks {flag}");
        }
    }
}

#[test]
fn the_overview_page_has_the_top_level_flags_and_names_only_real_ones() {
    let text = read_page("tcpkit.8");
    let (long, _) = help_flags(&[]);
    let in_page = page_long_flags(&text);
    assert!(long.iter().all(|f| in_page.contains(f)), "tcpkit.8 lacks some of {long:?}");
    let all: BTreeSet<String> =
        ["accept", "tracer", "metrics"].iter().flat_map(|c| help_flags(&[c]).0).chain(long).collect();
    let unknown: Vec<&String> = in_page.iter().filter(|f| !all.contains(*f)).collect();
    assert!(unknown.is_empty(), "tcpkit.8 names flags that do not exist: {unknown:?}");
}

#[test]
fn pages_carry_the_required_examples() {
    assert!(read_page("tcpkit-accept.8").contains("tcpkit accept \\-P 80,81 \\-4"));
    assert!(read_page("tcpkit-tracer.8").contains("tcpkit tracer \\-N 4026531969"));
    assert!(read_page("tcpkit-metrics.8").contains("tcpkit metrics \\-\\-listen 127.0.0.1:10070"));
}

#[test]
fn pages_render_without_warnings() {
    for page in ["tcpkit.8", "tcpkit-accept.8", "tcpkit-tracer.8", "tcpkit-metrics.8"] {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("man").join(page);
        let out = Command::new("man")
            .args(["--warnings", "-E", "UTF-8", "-l"])
            .arg(&path)
            .env("MANWIDTH", "80")
            .env("LC_ALL", "C.UTF-8")
            .output()
            .expect("running man (scripts/setup.sh installs man-db)");
        let warnings = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success() && warnings.is_empty(), "{page}: {warnings}");
    }
}
