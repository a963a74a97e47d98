//! Command line (DESIGN §10): `serve`, `check-config`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::{Config, ProcessEnv};
use crate::error::Error;
use crate::{options, server};

/// Exit status for a configuration error (sysexits `EX_USAGE`).
pub const EXIT_CONFIG: u8 = 64;
/// Exit status when `check-config` finds a problem beyond the file itself, and of a
/// failed `healthcheck`.
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
    /// Validate the configuration and probe the upstream (connection, TLS handshake,
    /// CalDAV), the attachment prefix and the storage, then exit: 0 when all pass, 1 when
    /// a check fails, 64 for an invalid configuration.
    CheckConfig {
        /// Configuration file (TOML; see proxy.toml.example).
        #[arg(short, long, default_value = "proxy.toml")]
        config: PathBuf,
    },
    /// Exit 0 when the admin listener answers `GET /healthz` with 200, else 1 (for
    /// container health checks).
    Healthcheck {
        /// Configuration file whose `server.admin_listen` is asked (not read with
        /// --address).
        #[arg(short, long, default_value = "proxy.toml")]
        config: PathBuf,
        /// Admin address to ask instead of the configuration's `server.admin_listen`.
        #[arg(long, value_name = "HOST:PORT")]
        address: Option<std::net::SocketAddr>,
    },
    /// Add, update, remove, list or download managed attachments (RFC 8607) on any
    /// server that supports them.
    Attach(crate::client::AttachArgs),
    /// Turn inline binary attachments already stored upstream into managed ones, with
    /// the service account of `[gc]` (objects changed meanwhile are read again, never
    /// overwritten; a re-run resumes an interrupted one).
    Migrate {
        /// Configuration file (TOML; see proxy.toml.example).
        #[arg(short, long, default_value = "proxy.toml")]
        config: PathBuf,
        /// A calendar to convert (URL or path; repeatable). Default: every calendar in
        /// the service account's calendar homes.
        #[arg(long, value_name = "URL")]
        calendar: Vec<String>,
        /// Count what would be converted; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Delete tombstones past retention and pending attachments proven unreferenced.
    Gc {
        /// Configuration file (TOML; see proxy.toml.example).
        #[arg(short, long, default_value = "proxy.toml")]
        config: PathBuf,
        /// Print what would be done; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Delete tombstones at least this old instead of `gc.retention` (e.g. 0, 1h, 7d).
        #[arg(long, value_name = "DURATION")]
        older_than: Option<String>,
    },
}

pub fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Serve { config } => {
            let Some(cfg) = load(&config) else {
                return ExitCode::from(EXIT_CONFIG);
            };
            crate::logging::init(&cfg.log);
            match runtime().block_on(server::serve(cfg)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) if matches!(e.downcast_ref(), Some(Error::Config(_))) => {
                    config_error(&e);
                    ExitCode::from(EXIT_CONFIG)
                }
                Err(e) => {
                    tracing::error!(error = %e, "calattach stopped");
                    eprintln!("calattach: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Gc {
            config,
            dry_run,
            older_than,
        } => {
            let Some(cfg) = load(&config) else {
                return ExitCode::from(EXIT_CONFIG);
            };
            crate::logging::init(&cfg.log);
            let retention = match older_than.as_deref() {
                None => cfg.gc.retention,
                Some("0") => std::time::Duration::ZERO,
                Some(v) => match humantime::parse_duration(v) {
                    Ok(d) => d,
                    Err(e) => {
                        eprintln!("calattach: --older-than {v:?}: {e}");
                        return ExitCode::from(EXIT_CONFIG);
                    }
                },
            };
            runtime().block_on(gc(cfg, dry_run, retention))
        }
        Command::Migrate {
            config,
            calendar,
            dry_run,
        } => {
            let Some(cfg) = load(&config) else {
                return ExitCode::from(EXIT_CONFIG);
            };
            crate::logging::init(&cfg.log);
            runtime().block_on(migrate(cfg, calendar, dry_run))
        }
        Command::Healthcheck { config, address } => healthcheck(&config, address),
        Command::Attach(args) => crate::client::run(args),
        Command::CheckConfig { config } => {
            let Some(cfg) = load(&config) else {
                return ExitCode::from(EXIT_CONFIG);
            };
            runtime().block_on(async {
                // What `serve` would refuse at start (the upstream's TLS settings, the
                // storage URL and options) is a configuration error here too.
                let state = match crate::state::State::new(cfg.clone()) {
                    Ok(s) => s,
                    Err(e) => {
                        config_error(&e);
                        return ExitCode::from(EXIT_CONFIG);
                    }
                };
                println!("configuration {}: ok", config.display());
                if check(&cfg, &state).await {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::from(EXIT_CHECK_FAILED)
                }
            })
        }
    }
}

/// `calattach: configuration error: <key> = <value>: <problem>` on standard error.
fn config_error(e: &dyn std::fmt::Display) {
    let text = e.to_string();
    let text = text.strip_prefix("configuration: ").unwrap_or(&text);
    eprintln!("calattach: configuration error: {text}");
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

async fn gc(cfg: Config, dry_run: bool, retention: std::time::Duration) -> ExitCode {
    let state = match crate::state::State::new(cfg) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("calattach: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let opts = crate::gc::Options {
        dry_run,
        retention,
        pending_grace: state.config.gc.pending_grace,
    };
    let report = crate::gc::run(&state, &opts, |line| println!("{line}")).await;
    println!(
        "gc{}: {} tombstones, {} pending and {} orphan blobs deleted; {} interrupted uploads cleared; {} pending promoted, {} left; {} errors",
        if dry_run { " (dry run)" } else { "" },
        report.tombstones_deleted,
        report.pending_deleted,
        report.orphan_blobs_deleted,
        report.uploads_cleared,
        report.pending_promoted,
        report.pending_left,
        report.errors
    );
    if report.errors > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

async fn migrate(cfg: Config, calendars: Vec<String>, dry_run: bool) -> ExitCode {
    let state = match crate::state::State::new(cfg) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("calattach: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    // A calendar may be named by its URL (through calattach or upstream) or its path.
    let paths: Vec<String> = calendars
        .iter()
        .map(|c| match url::Url::parse(c) {
            Ok(u) => u.path().to_owned(),
            Err(_) => c.clone(),
        })
        .collect();
    let mut print = |line: String| println!("{line}");
    match crate::attach::migrate::run(&state, &paths, dry_run, &mut print).await {
        Ok(r) => {
            println!(
                "migrate{}: {} objects read, {} {}converted, {} attachments ({} bytes) {}moved out of the calendars; {} errors",
                if dry_run { " (dry run)" } else { "" },
                r.objects,
                r.converted,
                if dry_run { "to be " } else { "" },
                r.attachments,
                r.bytes,
                if dry_run { "to be " } else { "" },
                r.errors
            );
            if r.errors > 0 {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            eprintln!("calattach: migrate: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Probes what `serve` depends on; prints one line per check. True when all pass.
async fn check(cfg: &Config, state: &crate::state::State) -> bool {
    let mut ok = true;
    let url = cfg.upstream.url.as_str().trim_end_matches('/');
    // The connection first (TCP, then the TLS handshake), so that its failure is
    // reported with its cause rather than as an unanswered request.
    match state.upstream.probe_connection().await {
        Ok(Some(tls)) => {
            println!("upstream {url}: TLS ok ({tls}; certificate and host name verified)")
        }
        Ok(None) => {}
        Err(reason) => {
            println!("upstream {url}: FAIL: cannot connect: {reason}");
            println!(
                "attachments.prefix {}: skipped (the upstream is unreachable)",
                cfg.attachments.prefix
            );
            check_storage(state).await;
            check_public_url(cfg);
            return false;
        }
    }
    ok &= check_upstream(cfg, state).await;
    ok &= check_prefix(state).await;
    ok &= check_storage(state).await;
    ok &= check_public_url(cfg);
    ok
}

/// `OPTIONS /` upstream; when that is not CalDAV (Baïkal's `/` is its web start page,
/// its DAV server lives under `/dav.php/`), the RFC 6764 bootstrap: the path
/// `/.well-known/caldav` redirects to. Then whether the DAV server offers Basic: an
/// anonymous `PROPFIND` of its root must be challenged with Basic, since calattach
/// replays the caller's credentials on its own requests and Digest cannot be replayed.
async fn check_upstream(cfg: &Config, state: &crate::state::State) -> bool {
    let url = cfg.upstream.url.as_str().trim_end_matches('/');
    let headers = match server::probe_upstream(&state.upstream).await {
        Ok(h) => h,
        Err(e) => {
            println!("upstream {url}: FAIL: {e}");
            return false;
        }
    };
    if options::upstream_has_managed_attachments(&headers) {
        println!(
            "upstream {url}: FAIL: it already advertises calendar-managed-attachments; \
             calattach must not run in front of a server that manages attachments itself"
        );
        return false;
    }
    let (root, headers) = if options::upstream_has_calendar_access(&headers) {
        ("/".to_owned(), headers)
    } else {
        match dav_root(state).await {
            Some(root) => {
                let h = probe_path(state, "OPTIONS", &root, true)
                    .await
                    .map(|(_, h)| h)
                    .unwrap_or_default();
                (root, h)
            }
            None => ("/".to_owned(), headers),
        }
    };
    // Without credentials some servers (sabre/dav) answer OPTIONS with a bare 401 (the
    // gc service credential, when configured, is sent so the check sees the DAV
    // header); an anonymous PROPFIND shows the authentication schemes offered.
    let challenge = match probe_path(state, "PROPFIND", &root, false).await {
        Ok((status, h)) if status == http::StatusCode::UNAUTHORIZED => Some(h),
        _ => None,
    };
    let mut ok = true;
    if options::upstream_has_managed_attachments(&headers) {
        println!(
            "upstream {url}: FAIL: it already advertises calendar-managed-attachments at \
             {root}; calattach must not run in front of a server that manages attachments itself"
        );
        return false;
    } else if options::upstream_has_calendar_access(&headers) {
        println!("upstream {url}: ok (speaks CalDAV at {root}: calendar-access)");
    } else if challenge.is_some() {
        println!(
            "upstream {url}: WARN: {root} asks for credentials before it says what it speaks \
             (set gc.username and gc.password to let this check log in)"
        );
    } else {
        println!(
            "upstream {url}: FAIL: reachable, but its DAV header lacks calendar-access \
             at {root} (is this a CalDAV server?)"
        );
        ok = false;
    }
    if let Some(h) = challenge {
        let schemes: Vec<String> = h
            .get_all(http::header::WWW_AUTHENTICATE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .filter_map(|v| v.split_whitespace().next())
            .map(|s| s.trim_end_matches(',').to_ascii_lowercase())
            .collect();
        if schemes.iter().any(|s| s == "digest") && !schemes.iter().any(|s| s == "basic") {
            println!(
                "upstream {url}: FAIL: {root} offers only Digest authentication; calattach \
                 replays the caller's credentials on its own requests, which Digest forbids, \
                 so attachment requests would all fail with 401. Switch the server to Basic \
                 (Baikal: dav_auth_type Basic, on the admin page under Settings or in \
                 config/baikal.yaml) and serve it over TLS"
            );
            ok = false;
        } else if !schemes.is_empty() {
            println!(
                "upstream {url}: ok (authentication: {})",
                schemes.join(", ")
            );
        }
    }
    ok
}

/// Where `/.well-known/caldav` (RFC 6764) redirects to on the upstream, if anywhere.
async fn dav_root(state: &crate::state::State) -> Option<String> {
    let mut req = http::Request::new(crate::body::empty());
    *req.method_mut() = http::Method::from_bytes(b"PROPFIND").ok()?;
    req.headers_mut()
        .insert("depth", http::HeaderValue::from_static("0"));
    *req.uri_mut() = state.upstream.uri_for(crate::identity::WELL_KNOWN).ok()?;
    req.headers_mut()
        .insert(http::header::HOST, state.upstream.authority().clone());
    let resp = state.upstream.send(req).await.ok()?;
    let location = resp
        .headers()
        .get(http::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let redirect = resp.status().is_redirection();
    crate::upstream::caller::drain(resp).await;
    let path = crate::identity::same_upstream_path(&state.upstream, &location?)?;
    redirect.then_some(path)
}

/// `method path` upstream (depth 0), with the gc service credential when `login` and
/// one is configured: the status and headers.
async fn probe_path(
    state: &crate::state::State,
    method: &str,
    path: &str,
    login: bool,
) -> Result<(http::StatusCode, http::HeaderMap), crate::error::Error> {
    let mut req = http::Request::new(crate::body::empty());
    *req.method_mut() = http::Method::from_bytes(method.as_bytes())
        .map_err(|e| crate::error::Error::Internal(e.to_string()))?;
    req.headers_mut()
        .insert("depth", http::HeaderValue::from_static("0"));
    *req.uri_mut() = state.upstream.uri_for(path)?;
    req.headers_mut()
        .insert(http::header::HOST, state.upstream.authority().clone());
    if login {
        if let Some(v) = gc_authorization(state) {
            req.headers_mut().insert(http::header::AUTHORIZATION, v);
        }
    }
    let resp = state.upstream.send(req).await?;
    let status = resp.status();
    let headers = resp.headers().clone();
    crate::upstream::caller::drain(resp).await;
    Ok((status, headers))
}

/// `Basic` of the gc service credential, when configured.
fn gc_authorization(state: &crate::state::State) -> Option<http::HeaderValue> {
    crate::gc::service_caller(state).and_then(|c| c.authorization().cloned())
}

/// calattach answers everything under `attachments.prefix` itself, so whatever the
/// upstream has there becomes unreachable. `PROPFIND <prefix>/` (depth 0) upstream, with
/// the gc service credential when one is configured (servers such as Radicale answer
/// 401 to anyone else), must answer 404 (or 410); 401/403 cannot tell and only warn;
/// anything else (a resource, a redirect, a server error) fails.
async fn check_prefix(state: &crate::state::State) -> bool {
    let prefix = &state.config.attachments.prefix;
    let probe = async {
        let mut req = http::Request::new(crate::body::empty());
        *req.method_mut() = http::Method::from_bytes(b"PROPFIND")
            .map_err(|e| crate::error::Error::Internal(e.to_string()))?;
        req.headers_mut()
            .insert("depth", http::HeaderValue::from_static("0"));
        *req.uri_mut() = state.upstream.uri_for(&format!("{prefix}/"))?;
        req.headers_mut()
            .insert(http::header::HOST, state.upstream.authority().clone());
        if let Some(user) = &state.config.gc.username {
            use base64::Engine;
            let pw = state.config.gc.password.as_deref().unwrap_or("");
            let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pw}"));
            if let Ok(v) = http::HeaderValue::from_str(&format!("Basic {token}")) {
                req.headers_mut().insert(http::header::AUTHORIZATION, v);
            }
        }
        let resp = state.upstream.send(req).await?;
        let status = resp.status();
        let html = resp
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim_start().to_ascii_lowercase().starts_with("text/html"));
        crate::upstream::caller::drain(resp).await;
        Ok::<_, crate::error::Error>((status, html))
    };
    match probe.await {
        Ok((s, true)) if s.is_success() && s != http::StatusCode::MULTI_STATUS => {
            println!(
                "attachments.prefix {prefix}: ok (the upstream answers PROPFIND {prefix}/ \
                 with a web page ({s}, text/html), not a DAV resource: nothing of its DAV \
                 server is hidden)"
            );
            true
        }
        Ok((s, _)) if s == http::StatusCode::NOT_FOUND || s == http::StatusCode::GONE => {
            println!("attachments.prefix {prefix}: ok (the upstream has nothing there: {s})");
            true
        }
        Ok((s, _)) if s == http::StatusCode::UNAUTHORIZED || s == http::StatusCode::FORBIDDEN => {
            let hint = if state.config.gc.username.is_some() {
                ""
            } else {
                " (set gc.username and gc.password to let this check log in)"
            };
            println!(
                "attachments.prefix {prefix}: WARN: the upstream answered {s}, so whether \
                 it has resources under {prefix}/ is unknown{hint}; calattach would hide them"
            );
            true
        }
        Ok((s, _)) => {
            println!(
                "attachments.prefix {prefix}: FAIL: prefix collision: the upstream answers \
                 PROPFIND {prefix}/ with {s}, not 404; calattach serves every path under the \
                 prefix itself and would hide what the upstream has there. Choose another \
                 attachments.prefix"
            );
            false
        }
        Err(e) => {
            println!("attachments.prefix {prefix}: FAIL: cannot ask the upstream: {e}");
            false
        }
    }
}

/// Writes, reads back and deletes a probe object.
async fn check_storage(state: &crate::state::State) -> bool {
    match state.store.probe().await {
        Ok(()) => {
            println!("storage {}: ok (write, read and delete)", state.store);
            true
        }
        Err(e) => {
            println!(
                "storage {}: FAIL: cannot write, read and delete a probe object: {}",
                state.store,
                crate::error::error_chain(&e)
            );
            false
        }
    }
}

/// ATTACH URLs are built from `server.public_url`: clients must be able to reach it.
fn check_public_url(cfg: &Config) -> bool {
    let url = &cfg.server.public_url;
    let host = url.host();
    let unspecified = match host {
        Some(url::Host::Ipv4(a)) => a.is_unspecified(),
        Some(url::Host::Ipv6(a)) => a.is_unspecified(),
        _ => false,
    };
    if unspecified {
        println!(
            "server.public_url {url}: FAIL: {} is a listening address, not one clients can \
             reach; set the name clients use (ATTACH URLs are built from it)",
            host.map(|h| h.to_string()).unwrap_or_default()
        );
        return false;
    }
    let loopback = match host {
        Some(url::Host::Ipv4(a)) => a.is_loopback(),
        Some(url::Host::Ipv6(a)) => a.is_loopback(),
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    };
    if loopback && !cfg.server.listen.ip().is_loopback() {
        println!(
            "server.public_url {url}: WARN: a loopback address while calattach listens on \
             {}; clients on other machines will get attachment URLs they cannot open",
            cfg.server.listen
        );
    } else {
        println!("server.public_url {url}: ok");
    }
    true
}

/// `GET /healthz` on the admin listener; an unspecified listen address (0.0.0.0) is
/// asked on loopback.
fn healthcheck(config: &std::path::Path, address: Option<std::net::SocketAddr>) -> ExitCode {
    use std::io::{Read, Write};
    let addr = match address {
        Some(a) => a,
        None => {
            // Whatever keeps the check from asking is unhealthy: exit 1, as documented.
            let Some(cfg) = load(config) else {
                return ExitCode::FAILURE;
            };
            let Some(a) = cfg.server.admin_listen else {
                eprintln!("calattach: server.admin_listen is disabled; nothing to check");
                return ExitCode::FAILURE;
            };
            a
        }
    };
    let mut addr = addr;
    if addr.ip().is_unspecified() {
        addr.set_ip(if addr.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        });
    }
    let timeout = std::time::Duration::from_secs(5);
    let result = (|| {
        let mut s = std::net::TcpStream::connect_timeout(&addr, timeout)?;
        s.set_read_timeout(Some(timeout))?;
        s.set_write_timeout(Some(timeout))?;
        write!(
            s,
            "GET /healthz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
        )?;
        let mut head = [0u8; 32];
        let n = s.read(&mut head)?;
        Ok::<_, std::io::Error>(String::from_utf8_lossy(&head[..n]).into_owned())
    })();
    match result {
        Ok(head) if head.starts_with("HTTP/1.1 200") => ExitCode::SUCCESS,
        Ok(head) => {
            eprintln!(
                "calattach: http://{addr}/healthz answered {:?}",
                head.lines().next().unwrap_or("")
            );
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("calattach: http://{addr}/healthz: {e}");
            ExitCode::FAILURE
        }
    }
}
