//! The `passerelle` binary: parse the command line, run, exit with its code.

use clap::Parser;

/// mimalloc: the store's writer thread frees what request threads allocate,
/// which makes glibc's allocator contend on its arena locks under load. Built
/// without transparent huge pages (Cargo.toml): they inflate resident memory.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    let cli = passerelle::cli::Cli::parse();
    // One crypto provider for every TLS use of the process (ring); it can only
    // fail if one is installed already, which is as good.
    let _ = rustls::crypto::ring::default_provider().install_default();
    // Unlocked handles: `serve` logs to stderr from every worker thread, and a
    // lock held here for the whole run would block them all.
    passerelle::cli::run(cli, &mut std::io::stdout(), &mut std::io::stderr())
}
