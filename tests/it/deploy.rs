//! What the deployment relies on (DESIGN §10, docker-compose.yml): calattach on the
//! S3 server the compose file ships (SeaweedFS, started from the harness with the
//! compose file's own S3 identity), `check-config`'s probes, and the container
//! health check (`calattach healthcheck`).

use crate::harness::calattach::run_to_exit;
use crate::harness::seaweedfs::SeaweedFs;
use crate::harness::{free_port, Calattach, Client, Storage, Upstream};
use std::path::Path;

const USER: &str = "user1";

fn payload(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 31 % 251) as u8).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seaweedfs_storage_round_trip_add_download_remove() {
    let up = Upstream::radicale();
    let (storage, _bucket) = SeaweedFs::shared().storage_toml();
    let proxy = Calattach::start(
        up,
        Storage::Local,
        &format!("{storage}[attachments]\nmax_attachment_size = \"32MiB\"\n"),
    );
    let cal = up.new_calendar(USER, "deploy").await;
    let href = format!("{cal}{}.ics", crate::harness::unique("ev"));
    let uid = crate::harness::unique("uid");
    up.put_event(
        USER,
        &href,
        &crate::transparency::event(&uid, "Deploy check", "20261201T100000Z"),
    )
    .await;
    let http = Client::new();
    let pw = up.password(USER);
    // Larger than one multipart part, so SeaweedFS's multipart upload is used too.
    let body = payload(12 * 1024 * 1024 + 5);

    let added = http
        .request("POST", &proxy.url(&format!("{href}?action=attachment-add")))
        .basic(USER, pw)
        .header("Content-Type", "application/octet-stream")
        .header("Content-Disposition", "attachment; filename=\"big.bin\"")
        .body(body.clone())
        .send()
        .await;
    assert_eq!(
        added.status,
        201,
        "add: {added:?}\ncalattach:\n{}\nseaweedfs:\n{}",
        proxy.stderr(),
        SeaweedFs::shared().stderr()
    );
    let location = added.header("location").expect("Location").to_string();
    assert!(added.header("cal-managed-id").is_some(), "{added:?}");

    let got = http.request("GET", &location).basic(USER, pw).send().await;
    assert_eq!(got.status, 200, "download: {got:?}");
    assert_eq!(got.body.len(), body.len());
    assert!(got.body == body, "downloaded bytes differ from the upload");

    let ranged = http
        .request("GET", &location)
        .basic(USER, pw)
        .header("Range", "bytes=100-199")
        .send()
        .await;
    assert_eq!(ranged.status, 206, "range: {ranged:?}");
    assert_eq!(&ranged.body[..], &body[100..200]);

    let id = added.header("cal-managed-id").unwrap_or_default();
    let removed = http
        .request(
            "POST",
            &proxy.url(&format!("{href}?action=attachment-remove&managed-id={id}")),
        )
        .basic(USER, pw)
        .send()
        .await;
    assert_eq!(removed.status, 204, "remove: {removed:?}");
    let gone = http.request("GET", &location).basic(USER, pw).send().await;
    assert_eq!(gone.status, 410, "after remove: {gone:?}");
}

/// A config file in a fresh dir; returns (dir, path).
fn config_file(text: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("proxy.toml");
    std::fs::write(&path, text).expect("write config");
    (dir, path)
}

fn check_config(dir: &Path, config: &Path) -> crate::harness::calattach::Exit {
    run_to_exit(dir, &["check-config", "-c", &config.to_string_lossy()], &[])
}

fn base_config(upstream: &str, storage_toml: &str, extra: &str) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:{}\"\nadmin_listen = \"\"\n{extra}\n\
         [upstream]\nurl = \"{upstream}\"\nconnect_timeout = \"2s\"\n{storage_toml}\n",
        free_port()
    )
}

#[test]
fn check_config_passes_with_seaweedfs_storage_and_warns_on_an_unknowable_prefix() {
    let up = Upstream::radicale();
    let (storage, _bucket) = SeaweedFs::shared().storage_toml();
    let (dir, path) = config_file(&base_config(&up.origin(), &storage, ""));
    let out = check_config(dir.path(), &path);
    assert_eq!(out.code, Some(0), "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("storage s3://") && out.stdout.contains("ok (write, read and delete)"),
        "{}",
        out.stdout
    );
    // Radicale wants credentials everywhere: the prefix check can only warn.
    assert!(
        out.stdout.contains("attachments.prefix /.attachments: ") && !out.stdout.contains("FAIL"),
        "{}",
        out.stdout
    );
}

#[test]
fn check_config_uses_the_gc_credential_to_find_a_prefix_that_is_a_user_home() {
    let up = Upstream::radicale();
    let dir = tempfile::tempdir().expect("tempdir");
    let storage = format!(
        "[storage]\nurl = \"file://{}\"\n",
        dir.path().join("data").display()
    );
    let gc = format!(
        "[gc]\nusername = \"{USER}\"\npassword = \"{}\"\n",
        up.password(USER)
    );
    // user1's own home collection: Radicale answers 207 to user1.
    let (_cfg_dir, taken) = config_file(
        &(base_config(&up.origin(), &storage, "")
            + &gc
            + &format!("[attachments]\nprefix = \"/{USER}\"\n")),
    );
    let out = check_config(dir.path(), &taken);
    assert_eq!(out.code, Some(1), "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains(&format!(
            "attachments.prefix /{USER}: FAIL: prefix collision"
        )),
        "{}",
        out.stdout
    );
}

#[test]
fn check_config_exits_64_when_the_storage_directory_cannot_be_created() {
    let up = Upstream::radicale();
    let dir = tempfile::tempdir().expect("tempdir");
    // A regular file where the storage directory should be: nothing can be created
    // below it, whatever the privileges (the tests may run as root, which ignores
    // permission bits).
    let blocker = dir.path().join("not-a-dir");
    std::fs::write(&blocker, b"x").expect("write blocker");
    let storage = format!(
        "[storage]\nurl = \"file://{}\"\n",
        blocker.join("data").display()
    );
    let (_cfg_dir, path) = config_file(&base_config(&up.origin(), &storage, ""));
    let out = check_config(dir.path(), &path);
    // `serve` would refuse to start: a configuration error, as in `serve`.
    assert_eq!(out.code, Some(64), "{}{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains("storage.url") && out.stderr.contains("storage directory"),
        "the error must name storage.url and the directory:\n{}",
        out.stderr
    );
    assert!(
        !out.stdout.contains(": ok"),
        "nothing is reported ok:\n{}",
        out.stdout
    );
}

#[test]
fn check_config_fails_when_the_storage_bucket_refuses_the_probe() {
    let up = Upstream::radicale();
    let sw = SeaweedFs::shared();
    // A bucket that was never created: the probe write is refused.
    let mut storage = format!(
        "[storage]\nurl = \"s3://{}\"\n[storage.options]\n",
        crate::harness::unique("missing")
    );
    for (key, value) in sw.options() {
        storage.push_str(&format!("{key} = {}\n", toml::Value::String(value)));
    }
    let (dir, path) = config_file(&base_config(&up.origin(), &storage, ""));
    let out = check_config(dir.path(), &path);
    assert_eq!(out.code, Some(1), "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout
            .contains("FAIL: cannot write, read and delete a probe object"),
        "{}",
        out.stdout
    );
}

#[test]
fn check_config_fails_when_the_prefix_collides_with_an_upstream_path() {
    // Radicale answers /.well-known/caldav/ with a redirect: something is there.
    let up = Upstream::radicale();
    let dir = tempfile::tempdir().expect("tempdir");
    let storage = format!(
        "[storage]\nurl = \"file://{}\"\n",
        dir.path().join("data").display()
    );
    let text = base_config(&up.origin(), &storage, "")
        + "[attachments]\nprefix = \"/.well-known/caldav\"\n";
    let (_cfg_dir, path) = config_file(&text);
    let out = check_config(dir.path(), &path);
    assert_eq!(out.code, Some(1), "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("prefix collision") && out.stdout.contains("/.well-known/caldav"),
        "{}",
        out.stdout
    );
}

#[test]
fn check_config_fails_on_an_unspecified_public_url_host() {
    let up = Upstream::radicale();
    let dir = tempfile::tempdir().expect("tempdir");
    let storage = format!(
        "[storage]\nurl = \"file://{}\"\n",
        dir.path().join("data").display()
    );
    let text = base_config(
        &up.origin(),
        &storage,
        "public_url = \"http://0.0.0.0:8080\"",
    );
    let (_cfg_dir, path) = config_file(&text);
    let out = check_config(dir.path(), &path);
    assert_eq!(out.code, Some(1), "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("server.public_url") && out.stdout.contains("0.0.0.0"),
        "{}",
        out.stdout
    );
}

#[test]
fn healthcheck_exits_zero_on_a_live_admin_listener_and_one_otherwise() {
    let up = Upstream::radicale();
    let admin = free_port();
    let proxy = Calattach::start(
        up,
        Storage::Local,
        &format!("[server]\nadmin_listen = \"127.0.0.1:{admin}\"\n"),
    );
    let config = proxy.dir().join("proxy.toml");
    let ok = run_to_exit(
        proxy.dir(),
        &["healthcheck", "-c", &config.to_string_lossy()],
        &[],
    );
    assert_eq!(ok.code, Some(0), "{}", ok.stderr);
    let closed = free_port();
    let down = run_to_exit(
        proxy.dir(),
        &["healthcheck", "--address", &format!("127.0.0.1:{closed}")],
        &[],
    );
    assert_eq!(down.code, Some(1), "{}", down.stderr);
    assert!(down.stderr.contains("/healthz"), "{}", down.stderr);
}
