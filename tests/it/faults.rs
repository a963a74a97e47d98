//! Fault injection at each step of an attachment add, update and remove (DESIGN §4
//! invariant, §8; docs/reliability.md lists every case with what the user sees).
//!
//! calattach runs with a [`FaultProxy`] in front of the real Radicale (and, for S3
//! storage, another in front of moto). A fault is injected at one step — the store
//! write, the commit PUT, the client's upload, the process itself (`SIGKILL`) — then
//! calattach is restarted on the same port and storage and `calattach gc` runs with a
//! service credential, `retention = "0"` and `pending_grace = "0"`. Every case then
//! checks the promise: the calendar object is valid iCalendar, every `ATTACH` it holds
//! downloads with the exact bytes uploaded, and the store holds blobs for exactly the
//! ids the object references (listing the directory or bucket).
//!
//! [`Lab`] is shared with `gc.rs`. Faults between calattach and its upstream or store
//! do not depend on which CalDAV server answers, so the matrix runs on Radicale; the
//! cases where the upstream's own answers matter to recovery (a commit the upstream
//! applied but whose answer was lost, a refused commit: sabre/dav answers a rewritten
//! PUT without an ETag and has calattach re-read) run on Baïkal as well.

use crate::attach::{parse_line, unfold, vevents, Backend, USER};
use crate::harness::calattach::{bin, config, run_to_exit, Exit};
use crate::harness::faultproxy::{Action, FaultProxy, Mode, Release};
use crate::harness::process::{port_open, Proc};
use crate::harness::upstream::usable;
use crate::harness::{loopback, raw, unique, Client, Kind, Moto, Reply, Storage, Upstream};
use bytes::Bytes;
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tempfile::TempDir;

/// Settings every lab instance shares: short upstream timeout, room for multipart-sized
/// attachments, and gc allowed to prove and delete at once.
const LAB_TOML: &str = r#"
[upstream]
response_timeout = "2s"
[attachments]
max_attachment_size = "16MiB"
[gc]
username = "user1"
password = "user1-pw"
retention = "0"
pending_grace = "0"
"#;

/// Larger than one multipart part (8 MiB), so S3 uploads it in parts.
pub const MULTIPART_LEN: usize = 9 * 1024 * 1024 + 123;

/// calattach on a fixed port and fixed storage, restartable, behind fault proxies.
pub struct Lab {
    /// The upstream's port (calattach reaches it through `upstream_fp`).
    up_port: u16,
    /// Between calattach and the upstream.
    pub upstream_fp: FaultProxy,
    /// Between calattach and moto (S3 labs only).
    pub s3_fp: Option<FaultProxy>,
    pub moto: Option<&'static Moto>,
    pub bucket: Option<String>,
    dir: TempDir,
    port: u16,
    config: PathBuf,
    proc: Option<Proc>,
    starts: usize,
    pub http: Client,
    /// A calendar of [`USER`] created for this lab.
    pub cal: String,
}

impl Lab {
    pub async fn start(backend: Backend, extra_toml: &str) -> Lab {
        Lab::start_kind(Kind::Radicale, backend, extra_toml).await
    }

    /// Like [`Lab::start`], in front of the shared upstream of `kind`.
    pub async fn start_kind(kind: Kind, backend: Backend, extra_toml: &str) -> Lab {
        let up = Upstream::get(kind);
        let cal = up.new_calendar(USER, "faults").await;
        Lab::start_on(up.port(), cal, backend, extra_toml, true).await
    }

    /// Like [`Lab::start`], in front of the upstream on `up_port`, whose calendar
    /// `cal` of [`USER`] the test uses; `faulty = false` connects calattach to the
    /// upstream directly (`upstream_fp` is then unused).
    pub async fn start_on(
        up_port: u16,
        cal: String,
        backend: Backend,
        extra_toml: &str,
        faulty: bool,
    ) -> Lab {
        let dir = tempfile::Builder::new()
            .prefix("calattach-lab-")
            .tempdir()
            .expect("tempdir");
        let port = crate::harness::free_port();
        let upstream_fp = FaultProxy::start(loopback(up_port));
        let (moto, s3_fp) = match backend {
            Backend::Local => (None, None),
            Backend::S3 => {
                let moto = Moto::shared();
                let endpoint: std::net::SocketAddr = moto
                    .endpoint()
                    .trim_start_matches("http://")
                    .parse()
                    .expect("moto address");
                (Some(moto), Some(FaultProxy::start(endpoint)))
            }
        };
        let mut extra = LAB_TOML.to_string();
        if let Some(fp) = &s3_fp {
            extra.push_str(&format!(
                "[storage.options]\naws_endpoint = \"{}\"\n",
                fp.origin()
            ));
        }
        let storage = match moto {
            Some(m) => Storage::S3(m),
            None => Storage::Local,
        };
        let merged = merge_tables(&extra, extra_toml);
        let origin = if faulty {
            upstream_fp.origin()
        } else {
            format!("http://127.0.0.1:{up_port}")
        };
        let (cfg, bucket) = config(dir.path(), port, &origin, storage, &merged);
        let config_path = dir.path().join("proxy.toml");
        std::fs::write(&config_path, cfg).expect("write proxy.toml");
        let mut lab = Lab {
            up_port,
            upstream_fp,
            s3_fp,
            moto,
            bucket,
            dir,
            port,
            config: config_path,
            proc: None,
            starts: 0,
            http: Client::new(),
            cal,
        };
        lab.restart();
        lab
    }

    /// Starts calattach (again) with the same config: same port, storage, public URL.
    pub fn restart(&mut self) {
        assert!(self.proc.is_none(), "calattach is still running");
        self.starts += 1;
        let mut proc = Proc::spawn(
            &format!("calattach-{}", self.starts),
            self.dir.path(),
            &bin(),
            &["serve", "-c", &self.config.to_string_lossy()],
            &[],
        );
        let port = self.port;
        proc.wait_ready(Duration::from_secs(20), || port_open(port));
        self.proc = Some(proc);
    }

    /// `SIGKILL`, then waits for the process to be gone.
    pub fn kill(&mut self) {
        let mut proc = self.proc.take().expect("calattach running");
        proc.signal("KILL");
        assert!(
            proc.wait_timeout(Duration::from_secs(10)).is_some(),
            "calattach survived SIGKILL"
        );
    }

    pub fn stderr(&self) -> String {
        self.proc.as_ref().map(Proc::stderr).unwrap_or_default()
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// The direct URL of `path` upstream.
    pub fn up_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.up_port)
    }

    pub fn pw(&self) -> &'static str {
        crate::harness::upstream::password(USER)
    }

    pub fn req(&self, method: &str, path_or_url: &str) -> crate::harness::http::RequestBuilder {
        let url = if path_or_url.starts_with("http") {
            path_or_url.to_string()
        } else {
            self.url(path_or_url)
        };
        self.http.request(method, &url).basic(USER, self.pw())
    }

    pub fn post(&self, href: &str, query: &str) -> crate::harness::http::RequestBuilder {
        self.req("POST", &format!("{href}?{query}"))
    }

    /// A POST carrying `body` as a file named `filename`.
    pub fn upload(
        &self,
        href: &str,
        query: &str,
        filename: &str,
        body: &[u8],
    ) -> crate::harness::http::RequestBuilder {
        self.post(href, query)
            .header("Content-Type", "application/octet-stream")
            .header(
                "Content-Disposition",
                format!("attachment; filename=\"{filename}\""),
            )
            .body(Bytes::copy_from_slice(body))
    }

    /// Sends an upload on a raw connection and reads until the connection ends, whatever
    /// happens to calattach meanwhile (for requests in flight when it is killed).
    pub fn raw_upload(
        &self,
        href: &str,
        query: &str,
        file: &File,
    ) -> tokio::task::JoinHandle<Vec<u8>> {
        let mut request = format!(
            "POST {href}?{query} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: {auth}\r\n\
             Content-Type: application/octet-stream\r\n\
             Content-Disposition: attachment; filename=\"{name}\"\r\n\
             Content-Length: {len}\r\nConnection: close\r\n\r\n",
            port = self.port,
            auth = crate::harness::basic(USER, self.pw()),
            name = file.name,
            len = file.bytes.len(),
        )
        .into_bytes();
        request.extend_from_slice(&file.bytes);
        let port = self.port;
        tokio::task::spawn_blocking(move || {
            use std::io::Read;
            let mut answer = Vec::new();
            if let Ok(mut s) = std::net::TcpStream::connect(loopback(port)) {
                let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
                if s.write_all(&request).is_ok() {
                    let _ = s.read_to_end(&mut answer);
                }
            }
            answer
        })
    }

    /// A new one-off event stored directly upstream; returns its path.
    pub async fn new_event(&self, summary: &str) -> String {
        let href = format!("{}{}.ics", self.cal, unique("ev"));
        let ics = crate::transparency::event(&unique("uid"), summary, "20250714T170000Z");
        let reply = self
            .http
            .request("PUT", &self.up_url(&href))
            .basic(USER, self.pw())
            .header("Content-Type", "text/calendar; charset=utf-8")
            .body(ics)
            .send()
            .await;
        assert_eq!(reply.status, 201, "PUT {href}: {reply:?}");
        href
    }

    /// The object read directly upstream: `(status, body)`.
    pub async fn upstream_object(&self, href: &str) -> Reply {
        self.http
            .request("GET", &self.up_url(href))
            .basic(USER, self.pw())
            .send()
            .await
    }

    /// Every key in the lab's storage, sorted.
    pub fn keys(&self) -> Vec<String> {
        let mut keys = match (self.moto, &self.bucket) {
            (Some(m), Some(b)) => m.keys(b),
            _ => {
                let root = self.dir.path().join("data");
                let mut out = Vec::new();
                walk(&root, &root, &mut out);
                out
            }
        };
        keys.sort();
        keys
    }

    /// Ids under `prefix/` (`blobs`, `meta`, …), file extensions stripped.
    pub fn ids_under(&self, prefix: &str) -> BTreeSet<String> {
        self.keys()
            .iter()
            .filter_map(|k| k.strip_prefix(&format!("{prefix}/")))
            .map(|rest| {
                let first = rest.split('/').next().unwrap_or(rest);
                first.trim_end_matches(".json").to_string()
            })
            .collect()
    }

    pub fn blob_ids(&self) -> BTreeSet<String> {
        self.ids_under("blobs")
    }

    /// Whether `state/<id>/live` exists.
    pub fn is_live(&self, id: &str) -> bool {
        self.keys().contains(&format!("state/{id}/live"))
    }

    /// Incomplete multipart uploads in the bucket (S3 labs; empty otherwise).
    pub fn incomplete_uploads(&self) -> usize {
        let (Some(m), Some(b)) = (self.moto, &self.bucket) else {
            return 0;
        };
        let port: u16 = m
            .endpoint()
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("moto port");
        let body = raw::blocking_get_body(
            loopback(port),
            &format!(
                "GET /{b}?uploads HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
            ),
        )
        .expect("list multipart uploads");
        body.matches("<UploadId>").count()
    }

    /// Runs `calattach gc <args>` on the lab's config and returns its outcome.
    pub fn gc(&self, args: &[&str]) -> Exit {
        self.gc_in(self.dir.path(), args)
    }

    /// Like [`Lab::gc`] with its output files in `cwd` (for parallel runs).
    pub fn gc_in(&self, cwd: &Path, args: &[&str]) -> Exit {
        let config = self.config.to_string_lossy().into_owned();
        let mut all = vec!["gc", "-c", config.as_str()];
        all.extend_from_slice(args);
        run_to_exit(cwd, &all, &[])
    }

    /// `calattach gc` that must succeed; returns its stdout.
    pub fn gc_ok(&self) -> String {
        let exit = self.gc(&[]);
        assert_eq!(
            exit.code,
            Some(0),
            "gc failed\nstdout:\n{}\nstderr:\n{}",
            exit.stdout,
            exit.stderr
        );
        exit.stdout
    }

    /// The promise after any fault: the object is valid iCalendar, every ATTACH it holds
    /// downloads with the bytes that were uploaded under its FILENAME (`files`), and
    /// each is an id the store knows. Returns the referenced managed ids.
    pub async fn assert_object_sound(
        &self,
        href: &str,
        files: &BTreeMap<String, Vec<u8>>,
    ) -> BTreeSet<String> {
        let reply = self.upstream_object(href).await;
        assert_eq!(reply.status, 200, "GET {href} upstream: {reply:?}");
        let ics = reply.text();
        assert_valid_icalendar(&ics);
        let mut ids = BTreeSet::new();
        for comp in vevents(&ics) {
            for attach in comp.attaches() {
                let Some(id) = attach.param("MANAGED-ID") else {
                    continue;
                };
                let name = attach.param("FILENAME").unwrap_or("");
                let expected = files.get(name).unwrap_or_else(|| {
                    panic!("ATTACH with unexpected FILENAME {name:?} in\n{ics}")
                });
                let got = self
                    .req("GET", &attach.value)
                    .send_with_timeout(Duration::from_secs(60))
                    .await;
                assert_eq!(
                    got.status,
                    200,
                    "ATTACH {} does not download: {got:?}\n{}",
                    attach.value,
                    self.stderr()
                );
                assert!(
                    got.body.as_ref() == expected.as_slice(),
                    "ATTACH {} downloads {} bytes, not the {} uploaded as {name}",
                    attach.value,
                    got.body.len(),
                    expected.len()
                );
                ids.insert(id.to_string());
            }
        }
        ids
    }

    /// After gc: the store holds blobs and metadata of exactly `referenced`, all live,
    /// and no incomplete multipart upload.
    pub fn assert_store_holds_exactly(&self, referenced: &BTreeSet<String>) {
        assert_eq!(
            &self.blob_ids(),
            referenced,
            "blobs in the store vs ids the object references\nkeys: {:?}",
            self.keys()
        );
        assert_eq!(
            &self.ids_under("meta"),
            referenced,
            "metadata in the store vs ids the object references\nkeys: {:?}",
            self.keys()
        );
        for id in referenced {
            assert!(
                self.is_live(id),
                "referenced {id} is not live\nkeys: {:?}",
                self.keys()
            );
        }
        assert_eq!(self.incomplete_uploads(), 0, "incomplete multipart uploads");
        let strays: Vec<String> = self
            .keys()
            .into_iter()
            .filter(|k| !key_id(k).is_some_and(|id| referenced.contains(id)))
            .collect();
        assert!(
            strays.is_empty(),
            "store keys of ids nothing references: {strays:?}"
        );
    }
}

/// The attachment id a store key belongs to (store.rs layout).
fn key_id(key: &str) -> Option<&str> {
    let parts: Vec<&str> = key.split('/').collect();
    let id = match parts.first()? {
        &"refs" => parts.get(2)?,
        _ => parts.get(1)?,
    };
    Some(id.trim_end_matches(".json"))
}

fn merge_tables(a: &str, b: &str) -> String {
    let mut base: toml::Table = a.parse().expect("lab TOML");
    let extra: toml::Table = b.parse().expect("extra TOML");
    fn merge(into: &mut toml::Table, from: toml::Table) {
        for (k, v) in from {
            match (into.get_mut(&k), v) {
                (Some(toml::Value::Table(x)), toml::Value::Table(y)) => merge(x, y),
                (_, v) => {
                    into.insert(k, v);
                }
            }
        }
    }
    merge(&mut base, extra);
    toml::to_string(&base).expect("TOML")
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            walk(root, &p, out);
        } else if let Ok(rel) = p.strip_prefix(root) {
            out.push(rel.to_string_lossy().replace('\\', "/"));
        }
    }
}

/// Structural validity (RFC 5545 §3.1, §3.4, §3.6): every line is `name[;params]:value`,
/// BEGIN/END nest properly under one VCALENDAR, and every VEVENT has a UID and DTSTART.
pub fn assert_valid_icalendar(ics: &str) {
    assert!(
        ics.ends_with("\r\n") || ics.ends_with('\n'),
        "no final line break:\n{ics}"
    );
    let mut stack: Vec<String> = Vec::new();
    let mut roots = 0;
    for line in unfold(ics) {
        if line.is_empty() {
            continue;
        }
        let p = parse_line(&line);
        assert!(
            !p.name.is_empty()
                && p.name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-'),
            "bad content line {line:?} in\n{ics}"
        );
        if p.name.eq_ignore_ascii_case("BEGIN") {
            if stack.is_empty() {
                roots += 1;
                assert_eq!(p.value, "VCALENDAR", "root is not VCALENDAR:\n{ics}");
            }
            stack.push(p.value.to_ascii_uppercase());
        } else if p.name.eq_ignore_ascii_case("END") {
            assert_eq!(
                stack.pop().as_deref(),
                Some(p.value.to_ascii_uppercase().as_str()),
                "unbalanced END:{} in\n{ics}",
                p.value
            );
        } else {
            assert!(!stack.is_empty(), "property outside VCALENDAR: {line:?}");
        }
    }
    assert!(stack.is_empty(), "unclosed {stack:?} in\n{ics}");
    assert_eq!(roots, 1, "not exactly one VCALENDAR:\n{ics}");
    let events = vevents(ics);
    assert!(!events.is_empty(), "no VEVENT:\n{ics}");
    for e in events {
        assert!(e.prop("UID").is_some(), "VEVENT without UID:\n{ics}");
        assert!(
            e.prop("DTSTART").is_some(),
            "VEVENT without DTSTART:\n{ics}"
        );
    }
}

/// Bytes that differ per test and per file.
pub fn content(tag: &str, len: usize) -> Vec<u8> {
    let seed = tag
        .bytes()
        .fold(7u64, |h, b| h.wrapping_mul(31).wrapping_add(b as u64));
    crate::attach::pseudo_random(len, seed)
}

/// One attachment of a test: its file name and bytes.
pub struct File {
    pub name: String,
    pub bytes: Vec<u8>,
}

impl File {
    pub fn new(name: &str, len: usize) -> File {
        File {
            name: name.to_string(),
            bytes: content(&unique(name), len),
        }
    }
}

fn files(list: &[&File]) -> BTreeMap<String, Vec<u8>> {
    list.iter()
        .map(|f| (f.name.clone(), f.bytes.clone()))
        .collect()
}

/// Adds `file` to `href`; asserts 201 and returns the managed id.
async fn add_ok(lab: &Lab, href: &str, file: &File) -> String {
    let reply = lab
        .upload(href, "action=attachment-add", &file.name, &file.bytes)
        .send_with_timeout(Duration::from_secs(60))
        .await;
    assert_eq!(
        reply.status,
        201,
        "add {}: {reply:?}\n{}",
        file.name,
        lab.stderr()
    );
    reply
        .header("cal-managed-id")
        .expect("Cal-Managed-ID")
        .to_string()
}

fn commit_put(href: &str) -> String {
    format!("PUT {href} ")
}

/// Restart (when stopped), the promise on the object, then gc, then the store holds
/// exactly the referenced ids. Returns the ids and gc's output.
async fn recover_and_check(lab: &mut Lab, href: &str, all: &[&File]) -> (BTreeSet<String>, String) {
    if lab.proc.is_none() {
        lab.restart();
    }
    let out = lab.gc_ok();
    let ids = lab.assert_object_sound(href, &files(all)).await;
    lab.assert_store_holds_exactly(&ids);
    // A second pass finds nothing left to do.
    let again = lab.gc_ok();
    assert!(
        again.contains("gc: 0 tombstones, 0 pending and 0 orphan blobs deleted; 0 interrupted uploads cleared; 0 pending promoted, 0 left; 0 errors"),
        "second gc pass still had work:\n{again}"
    );
    (ids, out)
}

// === store write fails ===

/// The store closes the connection part-way through a multipart upload (the
/// attachment is larger than one 8 MiB part) and refuses to reconnect: the add is a
/// 503 with Retry-After, the object is untouched, the multipart upload was aborted (no
/// incomplete upload, no blob). Once the store is back the same add succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_cut_mid_multipart_add_answers_503_and_leaves_nothing() {
    let mut lab = Lab::start(Backend::S3, "").await;
    let href = lab.new_event("Cut").await;
    let before = lab.upstream_object(&href).await;
    let big = File::new("big.bin", MULTIPART_LEN);
    let s3 = lab.s3_fp.as_ref().expect("s3 proxy");
    s3.set_mode(Mode::CloseAfter(3 * 1024 * 1024));
    s3.close_all();
    let reply = lab
        .upload(&href, "action=attachment-add", &big.name, &big.bytes)
        .send_with_timeout(Duration::from_secs(60))
        .await;
    assert_eq!(reply.status, 503, "{reply:?}\n{}", lab.stderr());
    assert!(reply.header("retry-after").is_some(), "{reply:?}");
    let after = lab.upstream_object(&href).await;
    assert_eq!(after.body, before.body, "the object changed");
    s3.set_mode(Mode::Pass);
    s3.close_all();
    assert_eq!(lab.blob_ids(), BTreeSet::new(), "keys: {:?}", lab.keys());
    assert_eq!(
        lab.incomplete_uploads(),
        0,
        "the multipart upload was not aborted"
    );
    let id = add_ok(&lab, &href, &big).await;
    let (ids, _) = recover_and_check(&mut lab, &href, &[&big]).await;
    assert_eq!(ids, BTreeSet::from([id]));
}

/// The store refuses connections while an update uploads its new version: 503, the
/// object still holds the old attachment, which still downloads; nothing new remains.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_down_during_update_answers_503_and_keeps_the_old_attachment() {
    let mut lab = Lab::start(Backend::S3, "").await;
    let href = lab.new_event("Store down").await;
    let old = File::new("old.txt", 2000);
    let id = add_ok(&lab, &href, &old).await;
    let s3 = lab.s3_fp.as_ref().expect("s3 proxy");
    s3.set_mode(Mode::Refuse);
    s3.close_all();
    let new = File::new("new.txt", 3000);
    let reply = lab
        .upload(
            &href,
            &format!("action=attachment-update&managed-id={id}"),
            &new.name,
            &new.bytes,
        )
        .send_with_timeout(Duration::from_secs(60))
        .await;
    assert_eq!(reply.status, 503, "{reply:?}\n{}", lab.stderr());
    assert!(reply.header("retry-after").is_some(), "{reply:?}");
    s3.set_mode(Mode::Pass);
    let (ids, _) = recover_and_check(&mut lab, &href, &[&old]).await;
    assert_eq!(ids, BTreeSet::from([id]));
}

/// S3 answers every write with 500 (after object_store's own retries): the add is a 503
/// with Retry-After, not a 500 — the client may try again — and the object is untouched
/// with nothing left in the bucket. Once S3 is well, the same add succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_errors_that_outlast_the_retries_answer_503() {
    let mut lab = Lab::start(Backend::S3, "").await;
    let href = lab.new_event("S3 unwell").await;
    let before = lab.upstream_object(&href).await;
    let file = File::new("f.txt", 1200);
    let s3 = lab.s3_fp.as_ref().expect("s3 proxy");
    for _ in 0..30 {
        let _ = s3.on("PUT ", Action::Respond(500));
    }
    let reply = lab
        .upload(&href, "action=attachment-add", &file.name, &file.bytes)
        .send_with_timeout(Duration::from_secs(60))
        .await;
    s3.clear_rules();
    assert_eq!(reply.status, 503, "{reply:?}\n{}", lab.stderr());
    assert!(reply.header("retry-after").is_some(), "{reply:?}");
    assert_eq!(
        lab.upstream_object(&href).await.body,
        before.body,
        "the object changed"
    );
    assert_eq!(lab.blob_ids(), BTreeSet::new(), "keys: {:?}", lab.keys());
    let id = add_ok(&lab, &href, &file).await;
    let (ids, _) = recover_and_check(&mut lab, &href, &[&file]).await;
    assert_eq!(ids, BTreeSet::from([id]));
}

// === upstream refuses the commit ===

/// The upstream answers every commit PUT of an add, an update and a remove with 500
/// (calattach reads the object back after each, sees the change was not applied and
/// tries again until `commit_deadline`): each answer is that 500, the object is
/// unchanged, the new blob of add and update is deleted at once, and the existing
/// attachment stays live and downloadable.
async fn upstream_500_on_commit_changes_nothing(kind: Kind, backend: Backend) {
    let mut lab = Lab::start_kind(kind, backend, "[attachments]\ncommit_deadline = \"1s\"\n").await;
    let href = lab.new_event("Refused").await;
    let keep = File::new("keep.txt", 1500);
    let id = add_ok(&lab, &href, &keep).await;
    let before = lab.upstream_object(&href).await;
    let new = File::new("new.txt", 700);
    for query in [
        "action=attachment-add".to_string(),
        format!("action=attachment-update&managed-id={id}"),
        format!("action=attachment-remove&managed-id={id}"),
    ] {
        let mut trigger = lab.upstream_fp.on(&commit_put(&href), Action::Respond(500));
        for _ in 0..40 {
            let _ = lab.upstream_fp.on(&commit_put(&href), Action::Respond(500));
        }
        let reply = lab
            .upload(&href, &query, &new.name, &new.bytes)
            .send_with_timeout(Duration::from_secs(30))
            .await;
        trigger.passed(Duration::from_secs(5)).await;
        lab.upstream_fp.clear_rules();
        assert_eq!(reply.status, 500, "{query}: {reply:?}\n{}", lab.stderr());
        assert_eq!(reply.header("cal-managed-id"), None, "{query}: {reply:?}");
        let after = lab.upstream_object(&href).await;
        assert_eq!(after.body, before.body, "{query}: the object changed");
        // Deleted at once, not left for gc.
        assert_eq!(lab.blob_ids(), BTreeSet::from([id.clone()]), "{query}");
    }
    let (ids, _) = recover_and_check(&mut lab, &href, &[&keep]).await;
    assert_eq!(ids, BTreeSet::from([id]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_500_on_commit_changes_nothing_local() {
    upstream_500_on_commit_changes_nothing(Kind::Radicale, Backend::Local).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_500_on_commit_changes_nothing_s3() {
    upstream_500_on_commit_changes_nothing(Kind::Radicale, Backend::S3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_500_on_commit_changes_nothing_baikal_local() {
    if usable(
        Kind::Baikal,
        "faults::upstream_500_on_commit_changes_nothing_baikal_local",
    ) {
        upstream_500_on_commit_changes_nothing(Kind::Baikal, Backend::Local).await;
    }
}

// === upstream times out on the commit ===

/// The commit PUT of an add never reaches the upstream and nothing answers: after
/// `response_timeout` the client gets 504, the blob stays pending (the outcome is
/// unknown to calattach), and gc proves it unreferenced and deletes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_that_never_arrives_times_out_504_and_gc_deletes_the_pending_blob() {
    let mut lab = Lab::start(Backend::Local, "").await;
    let href = lab.new_event("Lost commit").await;
    let file = File::new("lost.txt", 4000);
    let mut trigger = lab.upstream_fp.on(&commit_put(&href), Action::HoldRequest);
    let reply = lab
        .upload(&href, "action=attachment-add", &file.name, &file.bytes)
        .send_with_timeout(Duration::from_secs(30))
        .await;
    trigger.passed(Duration::from_secs(1)).await;
    assert_eq!(reply.status, 504, "{reply:?}\n{}", lab.stderr());
    trigger.release(Release::Drop);
    let pending = lab.blob_ids();
    assert_eq!(pending.len(), 1, "the pending blob: {:?}", lab.keys());
    let out = {
        let (ids, out) = recover_and_check(&mut lab, &href, &[&file]).await;
        assert!(ids.is_empty(), "the object references {ids:?}");
        out
    };
    let id = pending.iter().next().expect("one");
    assert!(
        out.contains(&format!("deleted pending {id}")),
        "gc output:\n{out}"
    );
}

/// The upstream applies the commit PUT of an add but its answer comes too late: the
/// client gets 504, yet the object references the attachment. It must not be deleted:
/// gc finds it referenced and promotes it, and it downloads intact.
async fn commit_applied_but_answered_too_late(kind: Kind) {
    let mut lab = Lab::start_kind(kind, Backend::Local, "").await;
    let href = lab.new_event("Late answer").await;
    let file = File::new("late.txt", 5000);
    let mut trigger = lab.upstream_fp.on(&commit_put(&href), Action::HoldResponse);
    let reply = lab
        .upload(&href, "action=attachment-add", &file.name, &file.bytes)
        .send_with_timeout(Duration::from_secs(30))
        .await;
    trigger.answered(Duration::from_secs(1)).await;
    assert_eq!(reply.status, 504, "{reply:?}\n{}", lab.stderr());
    trigger.release(Release::Drop);
    let pending = lab.blob_ids();
    assert_eq!(pending.len(), 1, "{:?}", lab.keys());
    let id = pending.iter().next().expect("one").clone();
    assert!(!lab.is_live(&id), "already live before gc");
    let (ids, out) = recover_and_check(&mut lab, &href, &[&file]).await;
    assert_eq!(ids, BTreeSet::from([id.clone()]));
    assert!(
        out.contains(&format!("promoted pending {id}")),
        "gc output:\n{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_applied_but_answered_too_late_gives_504_and_gc_promotes() {
    commit_applied_but_answered_too_late(Kind::Radicale).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_applied_but_answered_too_late_gives_504_and_gc_promotes_on_baikal() {
    let name = "faults::commit_applied_but_answered_too_late_gives_504_and_gc_promotes_on_baikal";
    if usable(Kind::Baikal, name) {
        commit_applied_but_answered_too_late(Kind::Baikal).await;
    }
}

// === the client goes away mid-upload ===

/// The client closes its connection after part of the body (once below one part, once
/// past the first 8 MiB part, so S3 has a multipart upload in progress): no blob, no
/// metadata, no incomplete upload remains, and the object is untouched.
async fn client_gone_mid_upload_leaves_nothing(backend: Backend) {
    let mut lab = Lab::start(backend, "").await;
    let href = lab.new_event("Abandoned").await;
    let before = lab.upstream_object(&href).await;
    for sent in [100 * 1024, 8 * 1024 * 1024 + 512 * 1024] {
        let head = format!(
            "POST {href}?action=attachment-add HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\
             Authorization: {auth}\r\nContent-Type: application/octet-stream\r\n\
             Content-Length: {len}\r\n\r\n",
            port = lab.port(),
            auth = crate::harness::basic(USER, lab.pw()),
            len = MULTIPART_LEN + 1024 * 1024,
        );
        let port = lab.port();
        tokio::task::spawn_blocking(move || {
            let mut s = std::net::TcpStream::connect(loopback(port)).expect("connect");
            s.write_all(head.as_bytes()).expect("head");
            s.write_all(&vec![b'z'; sent]).expect("part of the body");
            std::thread::sleep(Duration::from_millis(300));
        })
        .await
        .expect("join");
        // The abort runs after the disconnect is noticed.
        let mut left = lab.keys();
        for _ in 0..50 {
            if lab.blob_ids().is_empty() && lab.incomplete_uploads() == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            left = lab.keys();
        }
        assert_eq!(
            lab.blob_ids(),
            BTreeSet::new(),
            "after {sent} bytes: {left:?}"
        );
        assert_eq!(lab.incomplete_uploads(), 0, "after {sent} bytes");
        assert_eq!(lab.ids_under("meta"), BTreeSet::new(), "after {sent} bytes");
    }
    let after = lab.upstream_object(&href).await;
    assert_eq!(after.body, before.body, "the object changed");
    let file = File::new("after.txt", 100);
    let id = add_ok(&lab, &href, &file).await;
    let (ids, _) = recover_and_check(&mut lab, &href, &[&file]).await;
    assert_eq!(ids, BTreeSet::from([id]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_gone_mid_upload_leaves_nothing_local() {
    client_gone_mid_upload_leaves_nothing(Backend::Local).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_gone_mid_upload_leaves_nothing_s3() {
    client_gone_mid_upload_leaves_nothing(Backend::S3).await;
}

// === SIGKILL ===

/// Killed after the blob and metadata are written, while the commit PUT is held at
/// the fault proxy (it never reaches the upstream): after restart the object is
/// unchanged and gc deletes the pending attachment.
async fn sigkill_before_commit_then_gc_deletes_the_pending_blob(backend: Backend) {
    let mut lab = Lab::start(backend, "").await;
    let href = lab.new_event("Killed before commit").await;
    let file = File::new("killed.bin", 6000);
    let before = lab.upstream_object(&href).await;
    let mut trigger = lab.upstream_fp.on(&commit_put(&href), Action::HoldRequest);
    let in_flight = lab.raw_upload(&href, "action=attachment-add", &file);
    trigger.passed(Duration::from_secs(20)).await;
    lab.kill();
    trigger.release(Release::Drop);
    let _ = in_flight.await;
    assert_eq!(lab.blob_ids().len(), 1, "pending blob: {:?}", lab.keys());
    let (ids, out) = recover_and_check(&mut lab, &href, &[&file]).await;
    assert!(ids.is_empty(), "{ids:?}");
    assert!(out.contains("deleted pending"), "gc output:\n{out}");
    assert_eq!(lab.upstream_object(&href).await.body, before.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_before_commit_then_gc_deletes_the_pending_blob_local() {
    sigkill_before_commit_then_gc_deletes_the_pending_blob(Backend::Local).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_before_commit_then_gc_deletes_the_pending_blob_s3() {
    sigkill_before_commit_then_gc_deletes_the_pending_blob(Backend::S3).await;
}

/// Killed after the upstream applied the commit PUT but before calattach heard the
/// answer (so before it marked the attachment live): after restart gc finds the
/// object referencing the pending id and promotes it; it downloads intact.
async fn sigkill_after_commit_then_gc_promotes(kind: Kind, backend: Backend) {
    let mut lab = Lab::start_kind(kind, backend, "").await;
    let href = lab.new_event("Killed after commit").await;
    let file = File::new("committed.bin", 7000);
    let mut trigger = lab.upstream_fp.on(&commit_put(&href), Action::HoldResponse);
    let in_flight = lab.raw_upload(&href, "action=attachment-add", &file);
    trigger.answered(Duration::from_secs(20)).await;
    lab.kill();
    trigger.release(Release::Drop);
    let _ = in_flight.await;
    let blobs = lab.blob_ids();
    assert_eq!(blobs.len(), 1, "{:?}", lab.keys());
    let id = blobs.into_iter().next().expect("one");
    assert!(!lab.is_live(&id), "live before the state update");
    let (ids, out) = recover_and_check(&mut lab, &href, &[&file]).await;
    assert_eq!(ids, BTreeSet::from([id.clone()]));
    assert!(
        out.contains(&format!("promoted pending {id}")),
        "gc output:\n{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_after_commit_then_gc_promotes_local() {
    sigkill_after_commit_then_gc_promotes(Kind::Radicale, Backend::Local).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_after_commit_then_gc_promotes_s3() {
    sigkill_after_commit_then_gc_promotes(Kind::Radicale, Backend::S3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_after_commit_then_gc_promotes_baikal_local() {
    if usable(
        Kind::Baikal,
        "faults::sigkill_after_commit_then_gc_promotes_baikal_local",
    ) {
        sigkill_after_commit_then_gc_promotes(Kind::Baikal, Backend::Local).await;
    }
}

/// Killed while a batch commit (three adds queued behind a first one, committed with
/// one PUT) was applied upstream but before its answer arrived: the first add was
/// acknowledged and is live; the three batch members were not acknowledged, their ids
/// are pending and referenced, and gc promotes them — nothing is lost, nothing leaks,
/// every download is exact.
async fn sigkill_during_a_batch_commit_loses_nothing(backend: Backend) {
    let mut lab = Lab::start(backend, "").await;
    let href = lab.new_event("Killed in a batch").await;
    let files: Vec<File> = (0..4)
        .map(|n| File::new(&format!("b{n}.bin"), 900 + n * 111))
        .collect();
    // The first add leads: its commit PUT is held while the others queue behind it.
    let mut first = lab.upstream_fp.on(&commit_put(&href), Action::HoldRequest);
    let lead = lab.raw_upload(&href, "action=attachment-add", &files[0]);
    first.passed(Duration::from_secs(20)).await;
    let queued: Vec<_> = files[1..]
        .iter()
        .map(|f| lab.raw_upload(&href, "action=attachment-add", f))
        .collect();
    // Stored (metadata written), then a moment to join the queue.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while lab.keys().iter().filter(|k| k.starts_with("meta/")).count() < 4 {
        assert!(
            std::time::Instant::now() < deadline,
            "uploads did not arrive: {:?}",
            lab.keys()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The batch's PUT is applied, its answer held; then the process dies.
    let mut batch = lab.upstream_fp.on(&commit_put(&href), Action::HoldResponse);
    first.release(Release::Deliver);
    let led = lead.await.expect("join");
    assert!(
        String::from_utf8_lossy(&led).starts_with("HTTP/1.1 201"),
        "{}",
        String::from_utf8_lossy(&led)
    );
    batch.answered(Duration::from_secs(20)).await;
    lab.kill();
    batch.release(Release::Drop);
    for q in queued {
        let _ = q.await;
    }
    let all: Vec<&File> = files.iter().collect();
    let (ids, out) = recover_and_check(&mut lab, &href, &all).await;
    // The lead and the batch (all three, unless one was still on its way to the queue
    // when the lead's commit ended: then it was never sent, and gc deleted it).
    assert!(
        ids.len() >= 3,
        "the batch was lost: {ids:?}\ngc output:\n{out}"
    );
    assert!(
        out.contains(&format!("{} pending promoted", ids.len() - 1)),
        "gc output:\n{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_a_batch_commit_loses_nothing_local() {
    sigkill_during_a_batch_commit_loses_nothing(Backend::Local).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_a_batch_commit_loses_nothing_s3() {
    sigkill_during_a_batch_commit_loses_nothing(Backend::S3).await;
}

// === concurrency ===

/// 50 adds to one event at once from five clients (separate connection pools), while
/// a sixth client changes SUMMARY ten times the way a real client does (GET, edit,
/// PUT with If-Match, again on 412): every add answers 201, the object ends with all
/// 50 ATTACH (each downloads its own bytes) and the last SUMMARY, and the store holds
/// exactly 50 live blobs — before any gc.
///
/// Runs on a private Radicale allowing 256 connections: 50 writers, their pooled
/// connections and the tests running beside them exceed the shared one's 64 (Radicale
/// then refuses connections and calattach answers 502).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_adds_with_summary_edits_all_land() {
    let radicale = RoomyRadicale::start().await;
    let lab = Lab::start_on(
        radicale.port,
        format!("/{USER}/calendar/"),
        Backend::Local,
        "[upstream]\nresponse_timeout = \"30s\"\n\
         [attachments]\ncommit_deadline = \"120s\"\nmax_attachments_per_resource = 60\n\
         max_concurrent_uploads_per_user = 64\n",
        false,
    )
    .await;
    let href = lab.new_event("Summary 0").await;
    let uploads: Vec<File> = (0..50)
        .map(|n| File::new(&format!("f{n:02}.bin"), 500 + n * 37))
        .collect();
    let clients: Vec<Client> = (0..5).map(|_| Client::new()).collect();
    let mut adds = Vec::new();
    for (n, f) in uploads.iter().enumerate() {
        let req = clients[n % clients.len()]
            .request("POST", &lab.url(&format!("{href}?action=attachment-add")))
            .basic(USER, lab.pw())
            .header("Content-Type", "application/octet-stream")
            .header(
                "Content-Disposition",
                format!("attachment; filename=\"{}\"", f.name),
            )
            .body(Bytes::from(f.bytes.clone()));
        adds.push(tokio::spawn(
            req.send_with_timeout(Duration::from_secs(180)),
        ));
        // Each add takes seconds, so all 50 still overlap; starting them 20 ms apart
        // keeps the burst of new upstream connections within what Radicale's listen
        // backlog takes (at once, some are reset and calattach rightly answers 502).
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let editor = Client::new();
    let (url, pw) = (lab.url(&href), lab.pw());
    let summaries = tokio::spawn(async move {
        let mut conflicts = 0;
        for n in 1..=10 {
            loop {
                let got = editor.request("GET", &url).basic(USER, pw).send().await;
                assert_eq!(got.status, 200, "{got:?}");
                let etag = got.header("etag").expect("ETag").to_string();
                let edited = got.text().replace(
                    &format!("SUMMARY:Summary {}", n - 1),
                    &format!("SUMMARY:Summary {n}"),
                );
                let put = editor
                    .request("PUT", &url)
                    .basic(USER, pw)
                    .header("Content-Type", "text/calendar; charset=utf-8")
                    .header("If-Match", etag)
                    .body(edited)
                    .send_with_timeout(Duration::from_secs(60))
                    .await;
                match put.status.as_u16() {
                    200..=299 => break,
                    412 => conflicts += 1,
                    _ => panic!("client PUT: {put:?}"),
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        conflicts
    });
    let mut ids = BTreeSet::new();
    for a in adds {
        let reply = a.await.expect("join");
        assert_eq!(reply.status, 201, "{reply:?}\n{}", lab.stderr());
        ids.insert(reply.header("cal-managed-id").expect("id").to_string());
    }
    let conflicts = summaries.await.expect("join");
    assert_eq!(ids.len(), 50);
    let reply = lab.upstream_object(&href).await;
    let ics = reply.text();
    let summary = crate::attach::master(&ics)
        .prop("SUMMARY")
        .map(|p| p.value.clone());
    assert_eq!(
        summary.as_deref(),
        Some("Summary 10"),
        "({conflicts} client 412s)"
    );
    let all: Vec<&File> = uploads.iter().collect();
    let referenced = lab.assert_object_sound(&href, &files(&all)).await;
    assert_eq!(referenced, ids, "ATTACH in the object vs ids answered");
    lab.assert_store_holds_exactly(&ids);
}

/// An update and a remove of the same attachment, sent at the same moment (five
/// rounds): exactly one succeeds, the other gets 403 `valid-managed-id` (the id is
/// gone when its edit is applied or re-applied), and after gc (retention 0) the store
/// holds only what the object references.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_update_and_remove_one_wins_the_other_gets_403() {
    let lab = Lab::start(Backend::Local, "").await;
    let mut events = Vec::new();
    let mut all_files = Vec::new();
    for round in 0..5 {
        let href = lab.new_event("Race").await;
        let old = File::new(&format!("old{round}.txt"), 800);
        let id = add_ok(&lab, &href, &old).await;
        let new = File::new(&format!("new{round}.txt"), 900);
        let update = lab
            .upload(
                &href,
                &format!("action=attachment-update&managed-id={id}"),
                &new.name,
                &new.bytes,
            )
            .send_with_timeout(Duration::from_secs(30));
        let remove = lab
            .post(&href, &format!("action=attachment-remove&managed-id={id}"))
            .send_with_timeout(Duration::from_secs(30));
        let (u, r) = tokio::join!(tokio::spawn(update), tokio::spawn(remove));
        let (u, r) = (u.expect("join"), r.expect("join"));
        let won: Vec<u16> = [u.status.as_u16(), r.status.as_u16()]
            .into_iter()
            .filter(|s| (200..300).contains(s))
            .collect();
        assert_eq!(won, vec![204], "round {round}: update {u:?}\nremove {r:?}");
        let loser = if u.status.is_success() { &r } else { &u };
        assert_eq!(loser.status, 403, "round {round}: {loser:?}");
        crate::attach::assert_precondition(loser, "valid-managed-id", "the losing request");
        all_files.push(old);
        all_files.push(new);
        events.push(href);
    }
    let _ = lab.gc_ok();
    let map = files(&all_files.iter().collect::<Vec<_>>());
    let mut referenced = BTreeSet::new();
    for href in &events {
        referenced.extend(lab.assert_object_sound(href, &map).await);
    }
    lab.assert_store_holds_exactly(&referenced);
}

/// A private Radicale 3 with room for many connections (`max_connections = 256`);
/// same users as the shared upstreams, default calendar `/<user>/calendar/`.
pub struct RoomyRadicale {
    _proc: Proc,
    pub port: u16,
    _dir: TempDir,
}

impl RoomyRadicale {
    pub async fn start() -> RoomyRadicale {
        let dir = tempfile::Builder::new()
            .prefix("calattach-radicale-roomy-")
            .tempdir()
            .expect("tempdir");
        let port = crate::harness::free_port();
        let users: String = crate::harness::upstream::USERS
            .iter()
            .map(|(u, p)| format!("{u}:{p}\n"))
            .collect();
        std::fs::write(dir.path().join("users"), users).expect("users");
        let config = format!(
            "[server]\nhosts = 127.0.0.1:{port}\nmax_connections = 256\ndelay_on_error = 0\n\
             [auth]\ntype = htpasswd\nhtpasswd_filename = {d}/users\nhtpasswd_encryption = plain\n\
             delay = 0\n[rights]\ntype = owner_only\n\
             [storage]\nfilesystem_folder = {d}/collections\n\
             predefined_collections = {{\"calendar\": {{\"tag\": \"VCALENDAR\"}}}}\n\
             [web]\ntype = none\n[logging]\nlevel = warning\n",
            d = dir.path().display()
        );
        let path = dir.path().join("config");
        std::fs::write(&path, config).expect("config");
        let mut proc = Proc::spawn(
            "radicale-roomy",
            dir.path(),
            &crate::harness::python(),
            &["-m", "radicale", "--config", &path.to_string_lossy()],
            &[],
        );
        proc.wait_ready(Duration::from_secs(30), || port_open(port));
        // The first authenticated request creates the principal and its calendar.
        let reply = Client::new()
            .request(
                "PROPFIND",
                &format!("http://127.0.0.1:{port}/{USER}/calendar/"),
            )
            .basic(USER, crate::harness::upstream::password(USER))
            .header("Depth", "0")
            .send()
            .await;
        assert_eq!(reply.status, 207, "{reply:?}");
        RoomyRadicale {
            _proc: proc,
            port,
            _dir: dir,
        }
    }
}
// === update and remove whose commit outcome is lost ===

/// The upstream applies the commit of an update (or a remove) but calattach is killed
/// before it hears the answer, so the replaced id is never tombstoned. After restart
/// and gc the object is sound and the store holds only what the object references:
/// the replaced blob does not leak.
async fn sigkill_after_commit_of_update_or_remove_leaks_nothing(remove: bool) {
    let mut lab = Lab::start(Backend::Local, "").await;
    let href = lab.new_event("Killed while replacing").await;
    let old = File::new("old.bin", 3000);
    let id = add_ok(&lab, &href, &old).await;
    let new = File::new("new.bin", 4000);
    let query = if remove {
        format!("action=attachment-remove&managed-id={id}")
    } else {
        format!("action=attachment-update&managed-id={id}")
    };
    let mut trigger = lab.upstream_fp.on(&commit_put(&href), Action::HoldResponse);
    let in_flight = lab.raw_upload(&href, &query, &new);
    trigger.answered(Duration::from_secs(20)).await;
    lab.kill();
    trigger.release(Release::Drop);
    let _ = in_flight.await;
    let (ids, out) = recover_and_check(&mut lab, &href, &[&old, &new]).await;
    assert!(
        !ids.contains(&id),
        "the replaced id is still referenced: {ids:?}"
    );
    assert_eq!(
        ids.len(),
        usize::from(!remove),
        "{ids:?}\ngc output:\n{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_after_commit_of_update_leaks_nothing() {
    sigkill_after_commit_of_update_or_remove_leaks_nothing(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_after_commit_of_remove_leaks_nothing() {
    sigkill_after_commit_of_update_or_remove_leaks_nothing(true).await;
}
