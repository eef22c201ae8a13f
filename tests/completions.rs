//! Shell completions come from the clap definitions: each script knows both commands and every long flag
//! of each, and the bash one parses. Host only (the qemu guests have no bash); no BPF.
mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::*;

fn script(shell: &str) -> String {
    let (status, out, err) = run_tcpkit(&["completions", shell]);
    assert!(status.success() && err.is_empty(), "completions {shell}: {err}");
    out
}

fn long_flags(command: &str) -> Vec<String> {
    let (_, help, _) = run_tcpkit(&[command, "--help"]);
    help.split_whitespace()
        .map(|w| w.trim_end_matches(','))
        .filter(|w| w.starts_with("--") && w.len() > 2 && w[2..].chars().all(|c| c.is_ascii_alphanumeric() || c == '-'))
        .map(String::from)
        .collect()
}

#[test]
fn every_shell_script_knows_both_commands_and_their_flags() {
    for shell in ["bash", "zsh", "fish"] {
        let text = script(shell);
        for command in ["accept", "tracer"] {
            assert!(text.contains(command), "{shell}: no {command}");
            for flag in long_flags(command) {
                // fish spells long options without their dashes: -l ring-size
                let bare = flag.trim_start_matches("--");
                assert!(
                    text.contains(&flag) || (shell == "fish" && text.contains(&format!("-l {bare}"))),
                    "{shell}: no {flag}"
                );
            }
        }
    }
}

#[test]
fn bash_script_parses() {
    let mut bash = Command::new("bash").arg("-n").stdin(Stdio::piped()).spawn().expect("running bash");
    bash.stdin.take().unwrap().write_all(script("bash").as_bytes()).unwrap();
    assert!(bash.wait().unwrap().success(), "bash -n rejected the completion script");
}

#[test]
fn an_unknown_shell_is_a_usage_error() {
    assert_usage_error(&["completions", "powershell7"], "invalid value 'powershell7'");
}
