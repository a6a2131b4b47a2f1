//! The `passerelle` binary: parse the command line, run, exit with its code.

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = passerelle::cli::Cli::parse();
    passerelle::cli::run(
        cli,
        &mut std::io::stdout().lock(),
        &mut std::io::stderr().lock(),
    )
}
