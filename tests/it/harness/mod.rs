//! Test harness: real processes on free 127.0.0.1 ports with throw-away state.
//!
//! - [`Upstream`]: Radicale, Xandikos and Baïkal, one of each per test
//!   binary, with users `user1`..`user3`; tests stay independent by creating
//!   their own calendars ([`Upstream::new_calendar`]). Baïkal needs PHP and
//!   `../shared/upstreams/baikal`; where they are missing its tests say they
//!   were skipped ([`upstream::usable`]), unless `BAIKAL_REQUIRED=1`.
//! - [`Moto`]: an S3 server (moto) for `s3://` storage, one per test binary,
//!   a fresh bucket per calattach instance.
//! - [`Calattach`]: the real binary (`CARGO_BIN_EXE_calattach`) with a
//!   generated config, one per test.
//! - [`raw`]: hand-written TCP upstreams for what no real server can show
//!   (refusing, hanging, streaming gates, a 1 GiB sink).
//! - [`http`]: a small client (hyper-util's pooled client) with Basic auth.
//! - [`tls`]: a throw-away CA (rcgen) and a TLS terminator in front of an upstream.
//!
//! Every process runs under `scripts/lifeline.py` in its own process group:
//! guards kill the group on drop (also when a test panics), and the lifeline
//! stops the process when the test binary exits, which is what ends the
//! shared servers that live in statics. A process that fails to become ready
//! before its deadline fails the test with its captured stderr.
//!
//! The Python servers come from the project venv (`scripts/venv.sh`), found
//! through `VENV_DIR` (default `<repo>/.venv`), as `scripts/venv.sh` does.

#![allow(dead_code)]

pub mod calattach;
pub mod compare;
pub mod faultproxy;
pub mod http;
pub mod process;
pub mod raw;
pub mod s3;
pub mod seaweedfs;
pub mod tls;
pub mod upstream;

pub use calattach::{Calattach, Storage};
pub use http::{Client, Reply};
pub use s3::Moto;
pub use upstream::{Kind, Upstream};

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;

/// The repository root (where Cargo.toml lives).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The project venv holding the pinned Radicale, Xandikos and moto.
pub fn venv() -> PathBuf {
    match std::env::var_os("VENV_DIR") {
        Some(v) if !v.is_empty() => PathBuf::from(v),
        _ => repo_root().join(".venv"),
    }
}

/// The venv's Python; panics with the fix when the venv is missing, so a test
/// never passes or skips silently without its servers.
pub fn python() -> PathBuf {
    let py = venv().join("bin/python");
    assert!(
        py.exists(),
        "no Python venv at {} (run scripts/venv.sh, or set VENV_DIR)",
        venv().display()
    );
    py
}

pub fn script(name: &str) -> PathBuf {
    repo_root().join("scripts").join(name)
}

/// A port that was free a moment ago. The small race with other tests is
/// accepted: a lost race fails loudly at start-up, never silently.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind 127.0.0.1:0")
}

pub fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// A name no other test (or earlier run) uses: `prefix-<8 hex>`.
pub fn unique(prefix: &str) -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("{prefix}-{}", &id[..8])
}

/// Basic credentials header value.
pub fn basic(user: &str, password: &str) -> String {
    use base64::Engine;
    let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Basic {token}")
}
