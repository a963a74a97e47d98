//! Command line (DESIGN §10): `serve`, `check-config`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::{Config, LogFormat, ProcessEnv};
use crate::{options, server};

/// Exit status for a configuration error (sysexits `EX_USAGE`).
pub const EXIT_CONFIG: u8 = 64;
/// Exit status when `check-config` finds a problem beyond the file itself.
pub const EXIT_CHECK_FAILED: u8 = 1;

#[derive(Debug, Parser)]
#[command(
    name = "calattach",
    version,
    about = "CalDAV Managed Attachments (RFC 8607) for any CalDAV server"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the proxy.
    Serve {
        /// Configuration file (TOML; see proxy.toml.example).
        #[arg(short, long, default_value = "proxy.toml")]
        config: PathBuf,
    },
    /// Validate the configuration and probe the upstream, then exit.
    CheckConfig {
        #[arg(short, long, default_value = "proxy.toml")]
        config: PathBuf,
    },
}

pub fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Serve { config } => {
            let Some(cfg) = load(&config) else {
                return ExitCode::from(EXIT_CONFIG);
            };
            init_tracing(&cfg);
            match runtime().block_on(server::serve(cfg)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = %e, "calattach stopped");
                    eprintln!("calattach: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::CheckConfig { config } => {
            let Some(cfg) = load(&config) else {
                return ExitCode::from(EXIT_CONFIG);
            };
            println!("configuration {}: ok", config.display());
            if runtime().block_on(check(&cfg)) {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(EXIT_CHECK_FAILED)
            }
        }
    }
}

fn load(path: &std::path::Path) -> Option<Config> {
    match Config::load(path, &ProcessEnv) {
        Ok(c) => Some(c),
        Err(e) => {
            eprintln!("calattach: configuration error: {e}");
            None
        }
    }
}

fn runtime() -> tokio::runtime::Runtime {
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("calattach: cannot start the runtime: {e}");
            std::process::exit(1)
        }
    }
}

fn init_tracing(cfg: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_new(&cfg.log.level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match cfg.log.format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder.init(),
    }
}

/// Probes what `serve` depends on; prints one line per check. True when all pass.
async fn check(cfg: &Config) -> bool {
    let mut ok = true;
    let state = match server::State::new(cfg.clone()) {
        Ok(s) => s,
        Err(e) => {
            println!("upstream {}: {e}", cfg.upstream.url);
            return false;
        }
    };
    match server::probe_upstream(&state.upstream).await {
        Ok(headers) => {
            if options::upstream_has_managed_attachments(&headers) {
                println!(
                    "upstream {}: FAIL: it already advertises calendar-managed-attachments; \
                     calattach must not run in front of a server that manages attachments itself",
                    cfg.upstream.url
                );
                ok = false;
            } else if options::upstream_has_calendar_access(&headers) {
                println!(
                    "upstream {}: ok (speaks CalDAV: calendar-access)",
                    cfg.upstream.url
                );
            } else {
                println!(
                    "upstream {}: FAIL: reachable, but its DAV header lacks calendar-access \
                     (is this a CalDAV server?)",
                    cfg.upstream.url
                );
                ok = false;
            }
        }
        Err(e) => {
            println!("upstream {}: FAIL: {e}", cfg.upstream.url);
            ok = false;
        }
    }
    ok
}
