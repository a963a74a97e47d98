//! moto's S3 server (moto 5.2.5) for `s3://` storage, one per test binary.

use super::process::Proc;
use super::{free_port, loopback, raw};
use std::sync::OnceLock;
use std::time::Duration;
use tempfile::TempDir;

pub const REGION: &str = "us-east-1";
pub const ACCESS_KEY: &str = "calattach-test";
pub const SECRET_KEY: &str = "calattach-test-secret";

pub struct Moto {
    port: u16,
    proc: Proc,
    _dir: TempDir,
}

static MOTO: OnceLock<Moto> = OnceLock::new();

impl Moto {
    /// The moto server shared by this test binary (started on first use).
    pub fn shared() -> &'static Moto {
        MOTO.get_or_init(Moto::start)
    }

    pub fn start() -> Moto {
        let dir = tempfile::Builder::new()
            .prefix("calattach-moto-")
            .tempdir()
            .expect("tempdir");
        let port = free_port();
        let moto_server = super::venv().join("bin/moto_server");
        assert!(
            moto_server.exists(),
            "{} missing (run scripts/venv.sh)",
            moto_server.display()
        );
        let mut proc = Proc::spawn(
            "moto",
            dir.path(),
            &moto_server,
            &["-H", "127.0.0.1", "-p", &port.to_string()],
            &[],
        );
        // moto answers `GET /` (ListBuckets) once its app is loaded.
        proc.wait_ready(Duration::from_secs(60), || {
            raw::blocking_request(
                loopback(port),
                &format!("GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"),
            ) == Some(200)
        });
        Moto {
            port,
            proc,
            _dir: dir,
        }
    }

    /// `http://127.0.0.1:<port>`
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Creates a bucket with a unique name (a raw path-style PUT) and returns
    /// the name.
    pub fn new_bucket(&self, prefix: &str) -> String {
        let bucket = super::unique(prefix);
        let status = raw::blocking_request(
            loopback(self.port),
            &format!(
                "PUT /{bucket} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\n\
                 Connection: close\r\n\r\n",
                self.port
            ),
        );
        assert_eq!(
            status,
            Some(200),
            "moto: PUT /{bucket} failed; stderr:\n{}",
            self.proc.stderr()
        );
        bucket
    }

    /// object_store options for the `[storage.options]` table.
    pub fn options(&self) -> Vec<(&'static str, String)> {
        vec![
            ("aws_endpoint", self.endpoint()),
            ("aws_region", REGION.to_string()),
            ("aws_access_key_id", ACCESS_KEY.to_string()),
            ("aws_secret_access_key", SECRET_KEY.to_string()),
            ("aws_allow_http", "true".to_string()),
            ("aws_virtual_hosted_style_request", "false".to_string()),
        ]
    }

    /// Object keys in `bucket` (ListObjectsV2, first page), for assertions
    /// about what calattach stored.
    pub fn keys(&self, bucket: &str) -> Vec<String> {
        let body = raw::blocking_get_body(
            loopback(self.port),
            &format!(
                "GET /{bucket}?list-type=2 HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n\r\n",
                self.port
            ),
        )
        .unwrap_or_else(|| panic!("moto: cannot list {bucket}"));
        body.split("<Key>")
            .skip(1)
            .filter_map(|s| s.split("</Key>").next())
            .map(str::to_string)
            .collect()
    }
}
