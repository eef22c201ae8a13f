//! tcpkit: trace TCP connections with eBPF.
use std::process::ExitCode;

use clap::error::ErrorKind;
use clap::Parser;

mod accept;
#[cfg(test)]
mod allocations;
mod backend;
mod cli;
mod columns;
mod error;
mod event;
mod exporter;
mod families;
mod filter;
mod format;
mod http;
mod identity;
mod json;
mod kernel;
mod layout;
mod metrics;
mod names;
mod output;
mod pods;
mod ports;
mod preflight;
mod ring;
mod session;
mod signals;
mod skel;
mod text;
mod tracer;

pub const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (", env!("TCPKIT_GIT_COMMIT"), ")");

fn main() -> ExitCode {
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => return usage_error(err),
    };
    signals::install();
    let result = match &cli.command {
        cli::Command::Accept(args) => accept::run(args),
        cli::Command::Metrics(args) => metrics::run(args),
        cli::Command::Tracer(args) => tracer::run(args),
        cli::Command::Completions { shell } => completions(*shell),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("tcpkit: {err}");
            err.exit_code()
        }
    }
}

/// The completion script for `shell`, from the same clap definitions that parse the command line.
fn completions(shell: clap_complete::Shell) -> error::Result<()> {
    use clap::CommandFactory;
    let mut out = std::io::stdout().lock();
    clap_complete::generate(shell, &mut cli::Cli::command(), "tcpkit", &mut out);
    Ok(())
}

/// Help and version go to stdout with success; any other complaint is one line on stderr and exit 2.
fn usage_error(err: clap::Error) -> ExitCode {
    match err.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            let _ = err.print();
            ExitCode::SUCCESS
        }
        _ => {
            let text = err.render().to_string();
            let first = text.lines().next().unwrap_or("invalid command line");
            let first = first.strip_prefix("error: ").unwrap_or(first);
            eprintln!("tcpkit: {first} (see 'tcpkit --help')");
            ExitCode::from(2)
        }
    }
}
