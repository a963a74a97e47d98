//! `calattach`: parse the command line and hand over to the library.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    calattach::cli::run(calattach::cli::Cli::parse())
}
