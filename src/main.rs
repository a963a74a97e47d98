//! `calattach`: parse the command line and hand over to the library.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;

/// mimalloc instead of the system allocator: a proxy allocates and frees small buffers
/// and header maps on every request, and glibc's (let alone musl's) malloc showed up as
/// a tenth of calattach's CPU time on the pass-through benchmark (docs/performance.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    calattach::cli::run(calattach::cli::Cli::parse())
}
