//! The example Prometheus rules for `tcpkit metrics` (docs/prometheus/tcpkit-rules.yml): promtool accepts them,
//! their unit tests (tcpkit-rules.test.yml) pass, and README.md shows each rule group exactly as the file has
//! it, so that the two cannot drift. Needs promtool (Debian's prometheus package), no root and no BPF.
use std::path::{Path, PathBuf};

use yaml_rust2::YamlLoader;

#[path = "common/prometheus.rs"]
mod prometheus;

fn source_file(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn read(path: &str) -> String {
    let path = source_file(path);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

const RULES: &str = "docs/prometheus/tcpkit-rules.yml";
const RULES_TESTS: &str = "docs/prometheus/tcpkit-rules.test.yml";

/// Each rule group's text as the file has it: from its `  - name:` line to the next one, without the blank
/// lines between them.
fn group_texts(rules: &str) -> Vec<String> {
    let mut groups: Vec<String> = Vec::new();
    let mut in_groups = false;
    for line in rules.lines() {
        if line.starts_with("  - name: ") {
            groups.push(String::new());
        }
        in_groups |= line == "groups:";
        if let Some(group) = groups.last_mut().filter(|_| in_groups) {
            group.push_str(line);
            group.push('\n');
        }
    }
    groups.iter().map(|g| format!("{}\n", g.trim_end())).collect()
}

/// The rules (alert: and record: lines) a text names, trimmed.
fn rule_lines(text: &str) -> Vec<&str> {
    text.lines().map(str::trim).filter(|l| l.starts_with("- alert: ") || l.starts_with("- record: ")).collect()
}

#[test]
fn the_example_rules_pass_promtool_check_rules() {
    if let Err(said) = prometheus::promtool_check_rules(&source_file(RULES)) {
        panic!("{RULES}: {said}");
    }
}

#[test]
fn the_example_rules_pass_their_unit_tests() {
    if let Err(said) = prometheus::promtool_test_rules(&source_file(RULES_TESTS)) {
        panic!("{RULES_TESTS}: {said}");
    }
}

#[test]
fn the_readme_shows_every_rule_group_verbatim_and_no_other_rule() {
    let (rules, readme) = (read(RULES), read("README.md"));
    // The group count from a real YAML parser, so that a group the text split missed fails here.
    let parsed = YamlLoader::load_from_str(&rules).unwrap_or_else(|e| panic!("{RULES}: {e}"));
    let names: Vec<&str> = parsed[0]["groups"]
        .as_vec()
        .unwrap_or_else(|| panic!("{RULES} has no list of groups"))
        .iter()
        .map(|g| g["name"].as_str().unwrap_or_else(|| panic!("{RULES}: a group without a name")))
        .collect();
    let groups = group_texts(&rules);
    assert_eq!(groups.len(), names.len(), "{RULES}: groups {names:?}, but {} `  - name:` lines", groups.len());
    for (name, text) in names.iter().zip(&groups) {
        assert!(readme.contains(text.as_str()), "README.md does not show group {name} of {RULES} as it is:\n{text}");
    }
    let in_file = rule_lines(&rules);
    let unknown: Vec<&str> = rule_lines(&readme).into_iter().filter(|r| !in_file.contains(r)).collect();
    assert!(unknown.is_empty(), "README.md shows rules that {RULES} does not have: {unknown:?}");
}
