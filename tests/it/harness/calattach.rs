//! The real `calattach` binary with a generated config.

use super::process::{port_open, Proc};
use super::s3::Moto;
use super::upstream::Upstream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tempfile::TempDir;

/// The binary under test.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_calattach"))
}

/// Where calattach keeps attachments.
pub enum Storage<'a> {
    /// `file://` in the instance's temp dir.
    Local,
    /// A fresh bucket on the given moto server.
    S3(&'a Moto),
}

/// Anything calattach can front: a real upstream or a raw test server.
pub trait Origin {
    fn origin_url(&self) -> String;
}

impl Origin for Upstream {
    fn origin_url(&self) -> String {
        self.origin()
    }
}

impl Origin for str {
    fn origin_url(&self) -> String {
        self.to_string()
    }
}

impl Origin for String {
    fn origin_url(&self) -> String {
        self.clone()
    }
}

impl Origin for super::raw::RawServer {
    fn origin_url(&self) -> String {
        self.origin()
    }
}

/// A running calattach; dropped → killed (process group).
pub struct Calattach {
    pub proc: Proc,
    port: u16,
    dir: TempDir,
    /// Set for S3 storage: the bucket this instance writes to.
    pub bucket: Option<String>,
}

impl Calattach {
    /// Starts calattach in front of `upstream` with `storage`; `extra_toml` is
    /// merged over the generated config (tables merge, values replace).
    pub fn start(
        upstream: &(impl Origin + ?Sized),
        storage: Storage<'_>,
        extra_toml: &str,
    ) -> Calattach {
        Self::start_with_env(upstream, storage, extra_toml, &[])
    }

    pub fn start_with_env(
        upstream: &(impl Origin + ?Sized),
        storage: Storage<'_>,
        extra_toml: &str,
        env: &[(&str, &str)],
    ) -> Calattach {
        let dir = tempfile::Builder::new()
            .prefix("calattach-proxy-")
            .tempdir()
            .expect("tempdir");
        let port = super::free_port();
        let (config, bucket) = config(
            dir.path(),
            port,
            &upstream.origin_url(),
            storage,
            extra_toml,
        );
        let config_path = dir.path().join("proxy.toml");
        std::fs::write(&config_path, &config).expect("write proxy.toml");
        let mut proc = Proc::spawn(
            "calattach",
            dir.path(),
            &bin(),
            &["serve", "-c", &config_path.to_string_lossy()],
            env,
        );
        proc.wait_ready(Duration::from_secs(20), || port_open(port));
        Calattach {
            proc,
            port,
            dir,
            bucket,
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:<port>` (no trailing slash).
    pub fn origin(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The proxied URL of `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.origin())
    }

    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    pub fn stderr(&self) -> String {
        self.proc.stderr()
    }

    /// The instance's temp dir (local storage lives in `data/`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Peak resident set size (VmHWM) in bytes.
    pub fn peak_rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("read /proc/<pid>/status");
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmHWM in /proc/<pid>/status");
        kib * 1024
    }
}

/// Generates the config text and, for S3, the bucket it uses.
pub fn config(
    dir: &Path,
    port: u16,
    upstream: &str,
    storage: Storage<'_>,
    extra_toml: &str,
) -> (String, Option<String>) {
    let mut bucket = None;
    let storage_toml = match storage {
        Storage::Local => format!(
            "[storage]\nurl = {}\n",
            toml_str(&format!("file://{}", dir.join("data").display()))
        ),
        Storage::S3(moto) => {
            let name = moto.new_bucket("calattach");
            let mut text = format!(
                "[storage]\nurl = {}\n[storage.options]\n",
                toml_str(&format!("s3://{name}"))
            );
            for (key, value) in moto.options() {
                text.push_str(&format!("{key} = {}\n", toml_str(&value)));
            }
            bucket = Some(name);
            text
        }
    };
    let base = format!(
        r#"[server]
listen = "127.0.0.1:{port}"
admin_listen = ""
public_url = "http://127.0.0.1:{port}"
shutdown_grace = "10s"

[upstream]
url = {upstream}
connect_timeout = "2s"
response_timeout = "20s"

{storage_toml}
[log]
format = "text"
level = "info"
"#,
        upstream = toml_str(upstream),
    );
    let mut table: toml::Table = base.parse().expect("generated config is TOML");
    let extra: toml::Table = extra_toml
        .parse()
        .unwrap_or_else(|e| panic!("extra_toml is not TOML: {e}\n{extra_toml}"));
    merge(&mut table, extra);
    (toml::to_string(&table).expect("serialise config"), bucket)
}

fn merge(into: &mut toml::Table, from: toml::Table) {
    for (key, value) in from {
        match (into.get_mut(&key), value) {
            (Some(toml::Value::Table(a)), toml::Value::Table(b)) => merge(a, b),
            (_, value) => {
                into.insert(key, value);
            }
        }
    }
}

fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

/// The outcome of a calattach run that is expected to end by itself.
pub struct Exit {
    pub code: Option<i32>,
    pub stderr: String,
    pub stdout: String,
}

/// Runs `calattach <args>` in `cwd` and waits for it to exit (10 s deadline,
/// then it is killed and the test fails).
pub fn run_to_exit(cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> Exit {
    let stdout_path = cwd.join("run.stdout");
    let stderr_path = cwd.join("run.stderr");
    let mut command = Command::new(bin());
    command
        .args(args)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&stdout_path).expect("stdout file"))
        .stderr(std::fs::File::create(&stderr_path).expect("stderr file"));
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("CALATTACH_") {
            command.env_remove(key);
        }
    }
    for (k, v) in env {
        command.env(k, v);
    }
    let mut child = command.spawn().expect("spawn calattach");
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "calattach {args:?} still running after 10s; stderr:\n{}",
                std::fs::read_to_string(&stderr_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Exit {
        code: status.code(),
        stderr: std::fs::read_to_string(&stderr_path).unwrap_or_default(),
        stdout: std::fs::read_to_string(&stdout_path).unwrap_or_default(),
    }
}
